"""`/docs` (Swagger UI) and `/redoc`, served with their scripts and styles from this process.

FastAPI's own pages load them from a CDN, so they are blank offline or behind a strict firewall.
The files come from the `fastapi-offline` package (a server dependency), which ships Swagger UI 5
(OpenAPI 3.1, what FastAPI writes) and ReDoc 2; only its static files are used, not its code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
TITLE = "tokenrelay API"

router = APIRouter(include_in_schema=False)


def assets_dir() -> Path:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the API docs need the fastapi-offline package: pip install 'tokenrelay[server]'")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=TITLE,
                               swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css", swagger_favicon_url="/favicon.ico")


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title=TITLE, redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
                          redoc_favicon_url="/favicon.ico", with_google_fonts=False)


def install_docs(app: FastAPI) -> None:
    """Create the app with `docs_url=None, redoc_url=None`, then call this."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-assets")
