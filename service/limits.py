"""Request body limits, enforced without buffering: Content-Length is checked first, then bytes are counted
as they stream in."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import OPENAI_PREFIX, PROBLEM_MEDIA_TYPE, openai_error

UPLOAD_PATHS = ("/v1/datasets", "/openai/v1/files")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes if scope["path"].rstrip("/") in UPLOAD_PATHS else self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(scope, send, limit)
            return
        await self.app(scope, _counting(receive, limit), send)


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # an HTTPException passes through FastAPI's body parsing and is rendered as problem+json
                raise HTTPException(413, f"the request body exceeds {limit} bytes")
        return message

    return wrapped


async def _reject(scope: Scope, send: Send, limit: int) -> None:
    import json

    detail = f"the request body exceeds {limit} bytes"
    if scope["path"].startswith(OPENAI_PREFIX):
        document, media_type = openai_error(413, "payload_too_large", detail), "application/json"
    else:
        document, media_type = (
            {
                "type": "https://lingudistill.dev/problems/payload_too_large",
                "title": "Request body too large",
                "status": 413,
                "detail": detail,
                "instance": scope["path"],
                "code": "payload_too_large",
            },
            PROBLEM_MEDIA_TYPE,
        )
    body = json.dumps(document).encode()
    headers = [
        (b"content-type", media_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
