"""Teachers' and operators' pages served by the gateway under /ui (see pages.py).

`mount(app)` is the one hook `create_app` calls: it adds the router, the vendored static files
and the two handlers that turn "not signed in" into a redirect and a refusal into an HTML page.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def mount(app: FastAPI) -> None:
    """Serve the pages on `app`; nothing here imports a worker or ML library."""
    from api_gateway.ui.access import PageRefused, SignInRequired
    from api_gateway.ui.course_cache import CourseRowsCache
    from api_gateway.ui.pages import page, router

    app.state.ui_course_cache = CourseRowsCache()
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(STATIC)), name="ui-static")

    async def to_sign_in(request: Request, _exc: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET" or request.url.path.endswith("/audio"):
            return page(request, "error.html", None, status=401, code=401,
                        message="Your session has ended. Sign in again.")
        return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageRefused)
        return page(request, "error.html", None, status=exc.status, code=exc.status, message=exc.message)

    app.add_exception_handler(SignInRequired, to_sign_in)
    app.add_exception_handler(PageRefused, refused)
