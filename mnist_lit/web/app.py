"""The draw-a-digit page and its JSON API as one ASGI app (Starlette), served by uvicorn
(mnist_lit/serve.py). An uploaded image is prepared exactly as `predict` prepares a file
(nn/digits.py); everything the page needs is in page.html, so it works offline."""

import io
import warnings
from functools import partial
from importlib.resources import files

import anyio
import anyio.to_thread
from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mnist_lit.nn import digits
from mnist_lit.trained import TrainedNetwork

MAX_BYTES = 10 * 2**20  # a photo from a phone fits; a larger body is refused unread
MAX_PIXELS = 40_000_000  # a header that claims more is refused before a pixel is decoded


class BadImage(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def application(model: TrainedNetwork, workers: int) -> Starlette:
    """The app; at most `workers` images read and classified at once (the cores: more threads
    only take turns on them, and 8 concurrent clients got 20 % fewer answers a second)."""
    page = files("mnist_lit.web").joinpath("page.html").read_text(encoding="utf-8")
    limiter = anyio.CapacityLimiter(workers)

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def predict(request: Request) -> Response:
        """The raw body is an image file; ?image=1 adds the 28×28 image the network saw."""
        try:
            body = await _body(request)
            classify = partial(_classify, model, body, "image" in request.query_params)
            answer = await anyio.to_thread.run_sync(classify, limiter=limiter)
        except BadImage as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        return JSONResponse(answer)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return JSONResponse({"error": f"{request.method} {request.url.path}: {error.detail}"}, error.status_code)

    return Starlette(
        routes=[Route("/", index), Route("/predict", predict, methods=["POST"])],
        exception_handlers={HTTPException: http_error},  # 404 and 405 in JSON too
    )


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
        raise BadImage(400, "the body is empty; send an image file's bytes (PNG, JPEG, or any format Pillow reads)")
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
        raise BadImage(400, f"the body is not an image Pillow can read ({type(error).__name__})") from None


def _classify(model: TrainedNetwork, body: bytes, with_image: bool) -> dict[str, object]:
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
