"""The draw-a-digit page and its JSON API as one ASGI app (Starlette), served by uvicorn
(mnist_lit/serve.py). An uploaded image, the raw body or a multipart form's file, is prepared
exactly as `predict` prepares a file (nn/digits.py); everything the page needs is in page.html, so
it works offline. /openapi.json describes the API (Starlette's schema generator reads the YAML at
the end of each endpoint's docstring)."""

import hashlib
import io
import re
from base64 import b64encode
from collections.abc import Sequence
from functools import partial
from importlib.resources import files
from typing import Protocol

import anyio
import anyio.to_thread
import torch
from python_multipart.exceptions import FormParserError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator
from starlette.types import ASGIApp, Message

from mnist_lit.nn import digits
from mnist_lit.web.limits import BODIES, MAX_BYTES, BodyDeadline

HOW = "send an image file as the body (curl --data-binary @digit.png) or as a form's file (curl -F file=@digit.png)"

SCHEMA = SchemaGenerator(
    {"openapi": "3.0.0", "info": {"title": "mnist_lit: a trained network reads a digit", "version": "1"}}
)


class Model(Protocol):
    """What the page asks of a trained network (mnist_lit.load gives one): the app needs neither
    Lightning nor Hydra."""

    names: list[str]

    def predict(self, x: torch.Tensor) -> torch.Tensor: ...


class BadImage(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# What any endpoint may answer besides its own, added to each in /openapi.json.
ANY_ENDPOINT = {
    400: "a Host header that names another machine, on a server that listens on a loopback address",
    405: "the method is not the endpoint's: {error: ...}; the Allow header names the one it takes",
    503: "the server holds as many connections as it serves at once: try again",
}


def application(model: Model, workers: int, hosts: Sequence[str] = ("*",)) -> ASGIApp:
    """The app; at most `workers` images read and classified at once (the cores: more threads
    only take turns on them, and concurrent clients got fewer answers a second). `hosts`: the
    names a request's Host header may give (Starlette's TrustedHostMiddleware), so that a page
    elsewhere cannot reach a server on this machine through a name it controls (DNS rebinding)."""
    page = files("mnist_lit.web").joinpath("page.html").read_text(encoding="utf-8")
    page_headers = {
        # The page's own script and style, by their hashes, and nothing from anywhere else.
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {_hashes(page, 'script')}; style-src {_hashes(page, 'style')}; "
            "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
    classifying, buffering = anyio.CapacityLimiter(workers), anyio.CapacityLimiter(BODIES)

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers=page_headers)

    async def predict(request: Request) -> Response:
        """
        summary: The class of a digit in an image file, and the probability of each class
        description: >
          The image file (PNG, JPEG, or any format Pillow reads) is the raw body, or the first file
          of a multipart/form-data body (curl -F file=@digit.png). Its bytes and pixels are
          bounded: a 413 says by how many.
        parameters:
          - name: image
            in: query
            required: false
            description: present (?image=1) to add the 28×28 image the network saw
            schema: {type: string}
        requestBody:
          required: true
          content:
            image/*: {schema: {type: string, format: binary}}
            multipart/form-data:
              schema: {type: object, required: [file], properties: {file: {type: string, format: binary}}}
        responses:
          200:
            description: the class, and each class's probability
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    class: {type: string}
                    probabilities: {type: object, additionalProperties: {type: number}}
                    image: {type: array, items: {type: array, items: {type: number}}}
          400: {description: "no image: {error: how to send one}"}
          408: {description: "the body took too long to arrive: {error: ...}"}
          413: {description: "too many bytes or pixels: {error: ...}"}
          422: {description: "an image with no digit in it: {error: ...}"}
        """
        try:
            async with buffering:
                body = await _image(request)
            classify = partial(_classify, model, body, "image" in request.query_params)
            answer = await anyio.to_thread.run_sync(classify, limiter=classifying)
        except BadImage as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        return JSONResponse(answer)

    async def health(request: Request) -> Response:
        """
        summary: Whether the network is loaded and answering
        responses:
          200:
            description: the network's classes
            content:
              application/json:
                schema: {type: object, properties: {status: {type: string}, classes: {type: array}}}
        """
        return JSONResponse({"status": "ok", "classes": model.names})

    async def openapi(request: Request) -> Response:
        schema = SCHEMA.get_schema(routes=request.app.routes)
        for operation in (operation for path in schema["paths"].values() for operation in path.values()):
            for status, text in ANY_ENDPOINT.items():
                operation["responses"].setdefault(status, {"description": text})
        return JSONResponse(schema)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        # Its headers too: a 405's Allow.
        return JSONResponse(
            {"error": f"{request.method} {request.url.path}: {error.detail}"}, error.status_code, error.headers
        )

    app = Starlette(
        routes=[
            Route("/", index, include_in_schema=False),
            Route("/predict", predict, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/openapi.json", openapi, include_in_schema=False),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))],
        exception_handlers={HTTPException: http_error},  # 404 and 405 in JSON too
    )
    return BodyDeadline(app)


def _hashes(page: str, element: str) -> str:
    """The CSP sources that allow the page's inline <script> or <style> elements."""
    bodies = re.findall(rf"<{element}>(.*?)</{element}>", page, flags=re.DOTALL)
    return " ".join(f"'sha256-{b64encode(hashlib.sha256(body.encode()).digest()).decode()}'" for body in bodies)


async def _image(request: Request) -> bytes:
    """The image file's bytes: the body itself, or a multipart form's first file."""
    body = await _body(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=1) as form:
            for _, value in form.multi_items():
                if isinstance(value, UploadFile):
                    return await value.read()
    except HTTPException as error:  # Starlette's refusal of a malformed form
        raise BadImage(400, f"the form cannot be read ({error.detail}); {HOW}") from None
    except FormParserError as error:  # the same, as older Starlette releases pass python-multipart's on
        raise BadImage(400, f"the form cannot be read ({error}); {HOW}") from None
    raise BadImage(400, f"the form holds no file; {HOW}")


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        raise BadImage(413, f"the body holds {int(declared):,} bytes; send an image of at most {MAX_BYTES:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BYTES:
            raise BadImage(413, f"the body holds over {MAX_BYTES:,} bytes; send an image of at most {MAX_BYTES:,}")
    if not body:
        raise BadImage(400, f"the body is empty; {HOW}")
    return bytes(body)


def _classify(model: Model, body: bytes, with_image: bool) -> dict[str, object]:
    """The answer for an image file's bytes. Each refusal is raised outside the `except` that
    caught its cause: raised inside, it would keep the cause, and through its traceback the
    decoded image, alive until the garbage collector finds the cycle."""
    refused: BadImage | None = None
    try:
        image = digits.read(io.BytesIO(body))
    except digits.TooLarge as error:
        refused = BadImage(413, str(error))
    except Exception as error:  # what Pillow raises on a file it cannot decode, of many kinds
        refused = BadImage(400, f"the body is not an image Pillow can read ({type(error).__name__}); {HOW}")
    else:
        try:
            prepared = digits.prepare(image)
        except digits.NoDigit as error:
            refused = BadImage(422, str(error))
    if refused is not None:
        raise refused
    [probabilities] = model.predict(prepared[None])
    answer: dict[str, object] = {
        "class": model.names[int(probabilities.argmax())],
        "probabilities": dict(zip(model.names, probabilities.tolist(), strict=True)),
    }
    if with_image:
        answer["image"] = prepared.tolist()
    return answer
