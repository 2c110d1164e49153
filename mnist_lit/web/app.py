"""The draw-a-digit page and its JSON API as one ASGI app (Starlette), served by uvicorn
(mnist_lit/serve.py). An uploaded image, the raw body or a multipart form's file, is prepared
exactly as `predict` prepares a file (nn/digits.py); everything the page needs is in page.html, so
it works offline. /openapi.json describes the API (Starlette's schema generator reads the YAML at
the end of each endpoint's docstring)."""

import io
import warnings
from functools import partial
from importlib.resources import files
from typing import Protocol

import anyio
import anyio.to_thread
import torch
from PIL import Image
from python_multipart.exceptions import FormParserError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator
from starlette.types import Message

from mnist_lit.nn import digits

MAX_BYTES = 10 * 2**20  # a photo from a phone fits; a larger body is refused unread
MAX_PIXELS = 40_000_000  # a header that claims more is refused before a pixel is decoded
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


def application(model: Model, workers: int) -> Starlette:
    """The app; at most `workers` images read and classified at once (the cores: more threads
    only take turns on them, and concurrent clients got fewer answers a second)."""
    page = files("mnist_lit.web").joinpath("page.html").read_text(encoding="utf-8")
    limiter = anyio.CapacityLimiter(workers)

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def predict(request: Request) -> Response:
        """
        summary: The class of a digit in an image file, and the probability of each class
        description: >
          The image file (PNG, JPEG, or any format Pillow reads) is the raw body, or the first file
          of a multipart/form-data body (curl -F file=@digit.png). At most 10 MiB and 40,000,000 pixels.
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
              schema: {type: object, properties: {file: {type: string, format: binary}}}
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
          413: {description: "too many bytes or pixels: {error: ...}"}
          422: {description: "an image with no digit in it: {error: ...}"}
        """
        try:
            body = await _image(request)
            classify = partial(_classify, model, body, "image" in request.query_params)
            answer = await anyio.to_thread.run_sync(classify, limiter=limiter)
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
        return JSONResponse(SCHEMA.get_schema(routes=request.app.routes))

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return JSONResponse({"error": f"{request.method} {request.url.path}: {error.detail}"}, error.status_code)

    return Starlette(
        routes=[
            Route("/", index, include_in_schema=False),
            Route("/predict", predict, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/openapi.json", openapi, include_in_schema=False),
        ],
        exception_handlers={HTTPException: http_error},  # 404 and 405 in JSON too
    )


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


def _read(body: bytes) -> Image.Image:
    """The image that `body` holds, read as `predict` reads a file, once its header shows a size we accept."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as image:  # reads the header alone
                width, height = image.size
            if width * height > MAX_PIXELS:
                raise BadImage(413, f"the image is {width}×{height} pixels; send one of at most {MAX_PIXELS:,}")
            return digits.read(io.BytesIO(body))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(413, f"the image claims too many pixels to decode; send one of at most {MAX_PIXELS:,}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # what Pillow raises on a broken file
        raise BadImage(400, f"the body is not an image Pillow can read ({type(error).__name__}); {HOW}") from None


def _classify(model: Model, body: bytes, with_image: bool) -> dict[str, object]:
    try:
        prepared = digits.prepare(_read(body))
    except digits.NoDigit as error:
        raise BadImage(422, str(error)) from None
    [probabilities] = model.predict(prepared[None])
    answer: dict[str, object] = {
        "class": model.names[int(probabilities.argmax())],
        "probabilities": dict(zip(model.names, probabilities.tolist(), strict=True)),
    }
    if with_image:
        answer["image"] = prepared.tolist()
    return answer
