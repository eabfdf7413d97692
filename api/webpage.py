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


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    # Browsers ask for it on every page (the API docs too); an SVG, which they all draw.
    return FileResponse(WEB_DIR / "favicon.svg", media_type="image/svg+xml")


def static_files() -> StaticFiles:
    return StaticFiles(directory=WEB_DIR)
