"""Routes of the web front end: the two pages and their static files (`GET /v1/me`, which the
pages read, is an API route: api/me.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

STATIC = Path(__file__).parent / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
router = APIRouter()


def _file(path: Path, cache: str = "no-cache") -> FileResponse:
    return FileResponse(path, media_type=TYPES[path.suffix], headers={"Cache-Control": cache})


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def chat_page() -> FileResponse:
    return _file(STATIC / "index.html", "no-store")


@router.api_route("/admin", methods=["GET", "HEAD"], include_in_schema=False)
async def admin_console() -> FileResponse:
    return _file(STATIC / "admin.html", "no-store")


@router.api_route("/static/{name:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file() or path.suffix not in TYPES:
        raise HTTPException(404, f"no static file {name!r}")  # OpenAI-shaped by api/errors.py
    return _file(path)
