"""The web page at `GET /`: plain HTML, JS and CSS shipped in the package, using the public API only."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent / "web"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    # no-cache: a page from a previous version must not outlive an upgrade of the gateway.
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    return StaticFiles(directory=WEB_DIR)
