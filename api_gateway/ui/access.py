"""Who is looking at a page: the signed-in key as the JSON API's own `Principal`.

The pages call the same `Principal.scope()` and `Principal.can_see()` as the /v1 routes, so the
browser can never see more than the key could with curl; an `ApiError` from them becomes an
HTML refusal with the same status (403 outside the scope, 404 for another tenant's recording).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from api_gateway.auth import Principal
from api_gateway.deps import SessionDep
from api_gateway.errors import ApiError
from api_gateway.ui import sessions
from db.models import Role

T = TypeVar("T")


class SignInRequired(Exception):
    """No valid session: the handler redirects to the sign-in page, then back here."""


class PageRefused(Exception):
    """An HTML error page with this status and a plain message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Viewer:
    """The principal plus what the page chrome needs (CSRF token for forms, who is signed in)."""

    def __init__(self, principal: Principal, signed: sessions.SignedIn) -> None:
        self.principal = principal
        self.csrf_token = signed.csrf_token
        self.key_name = signed.key.name or signed.key.prefix
        self.role = principal.role.value
        self.is_ops = principal.role is Role.ops

    def scoped(self, fn: Callable[[], T]) -> T:
        """Run a scope check of the JSON API, turning its ApiError into a PageRefused."""
        try:
            return fn()
        except ApiError as exc:
            raise PageRefused(exc.status_code, exc.message) from None


def current_viewer(request: Request, session: SessionDep) -> Viewer:
    signed = sessions.current(session, request)
    if signed is None:
        raise SignInRequired()
    return Viewer(Principal.of(signed.key), signed)


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def ops_viewer(viewer: ViewerDep) -> Viewer:
    if not viewer.is_ops:
        raise PageRefused(403, "Only operators may open this page.")
    return viewer


OpsViewerDep = Annotated[Viewer, Depends(ops_viewer)]


def parse_uuid(value: str | None, *, status: int = 404, what: str = "page") -> uuid.UUID | None:
    if value in (None, ""):
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise PageRefused(status, f"No such {what}.") from None
