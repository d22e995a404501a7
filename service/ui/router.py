"""Serves the static web UI at /ui.

No auth here and no private data: the page asks for an API key, keeps it in sessionStorage, and calls the public
/v1 API with it, so tenant scoping is exactly the API's. The Content-Security-Policy allows nothing but this origin,
so the UI never loads code or data from anywhere else.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from service.errors import NotFound

STATIC = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/ui", include_in_schema=False)


class UiFileNotFound(NotFound):
    code, title = "ui_file_not_found", "No such UI file"


@router.get("")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/")
def ui_index() -> FileResponse:
    return _file(STATIC / "index.html")


@router.get("/static/{path:path}")
def ui_static(path: str) -> FileResponse:
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC) or not target.is_file():
        raise UiFileNotFound(f"no UI file {path!r}")
    return _file(target)


def _file(path: Path) -> FileResponse:
    media_type = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)
