"""What one client can cost the server: bytes, time, connections and memory, each bounded, so that
a few slow or hostile clients cannot keep the others from their answers."""

import json
import math

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BYTES = 10 * 2**20  # a photo from a phone fits; a larger body is refused unread
BODIES = 8  # bodies buffered at once (MAX_BYTES each at most); more wait their turn
BODY_SECONDS = 10.0  # from the request's start until its body is in, or its answer begins
CONNECTIONS = 64  # open at once; uvicorn answers 503 beyond them
SHUTDOWN_SECONDS = 3  # that Ctrl-C waits for the requests under way


class BodyDeadline:
    """An ASGI wrapper: a request whose body is still arriving `seconds` after it began, and that
    has had no answer yet, gets 408 and its connection closed (the server reads no more of it).

    The time runs until the body is in or the answer begins, whichever comes first: an endpoint
    that reads no body answers at once, and one that reads it may then take its time to answer."""

    def __init__(self, app: ASGIApp, seconds: float = BODY_SECONDS) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False

        async def received() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                timer.deadline = math.inf
            return message

        async def answering(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered, timer.deadline = True, math.inf
            await send(message)

        # Cancelled, not raised: the app's own error handling would answer an exception with a 500.
        with anyio.CancelScope(deadline=anyio.current_time() + self.seconds) as timer:
            await self.app(scope, received, answering)
        if timer.cancelled_caught and not answered:
            error = f"the body took over {self.seconds:g} s to arrive; send it at once"
            body = json.dumps({"error": error}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 408, "headers": [*headers, (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
