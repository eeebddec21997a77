"""The API docs page, served from this machine, and a front page that says where things are.

FastAPI's default `/docs` loads Swagger UI's JavaScript and CSS from a CDN, so an offline or
air-gapped install showed a blank page. The assets come from the `swagger-ui-bundle` package
instead and are served under `/docs-assets`; ReDoc (also CDN-only) is not offered. `GET /` lists
the docs, the OpenAPI document and the health endpoints, as HTML for a browser and JSON otherwise.
"""

from __future__ import annotations

from html import escape

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs-assets"
LINKS: dict[str, str] = {
    "docs": "/docs",
    "openapi": "/openapi.json",
    "health": "/healthz",
    "ready": "/readyz",
    "metrics": "/metrics",
}
DESCRIPTIONS = {
    "docs": "API documentation, with a form to try each endpoint",
    "openapi": "the OpenAPI document",
    "health": "liveness",
    "ready": "readiness: database, broker, object store",
    "metrics": "Prometheus metrics",
}


def install_docs(app: FastAPI) -> None:
    """Add `/docs` (local assets), `/docs-assets/*` and `/` to an app built with `docs_url=None`."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)
    def front_page(request: Request) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"service": app.title, "version": app.version, "links": LINKS})
        items = "".join(
            f'<li><a href="{escape(path)}">{escape(path)}</a>: {escape(DESCRIPTIONS[name])}</li>'
            for name, path in LINKS.items()
        )
        return HTMLResponse(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(app.title)}</title></head>"
            f"<body><h1>{escape(app.title)} {escape(app.version)}</h1><ul>{items}</ul></body></html>"
        )
