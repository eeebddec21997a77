"""`apa-fleet tenants ...` and `apa-fleet keys ...`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from db.accounts import AccountError, create_api_key, create_tenant, get_tenant, revoke_api_key
from db.engine import session_scope
from db.models import ApiKey, Role, Tenant
from cli.context import sessions

console = Console()
tenants_app = typer.Typer(help="LMS integrations (tenants).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for LMS, teachers and ops.", no_args_is_help=True)


def _refuse(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


@tenants_app.command("create")
def tenants_create(
    name: str,
    callback_url: Annotated[str | None, typer.Option(help="Where signed results are POSTed.")] = None,
    bucket: Annotated[list[str], typer.Option(help="S3 bucket this tenant's audio may come from (repeat).")] = [],  # noqa: B006
) -> None:
    """Create a tenant and print its webhook signing secret (shown once)."""
    from fleet.callback_policy import CallbackRefused, check_callback_url
    from cli.context import settings

    if callback_url is not None:  # its origin is the only one this tenant's callbacks may go to
        try:
            check_callback_url(callback_url, callback_url,
                               allow_loopback_http=settings().callback_allow_loopback_http)
        except CallbackRefused as exc:
            _refuse(exc)
    try:
        with session_scope(sessions()) as s:
            tenant = create_tenant(s, name, callback_url=callback_url, allowed_buckets=bucket)
            tid, secret = tenant.id, tenant.webhook_secret
    except AccountError as exc:
        _refuse(exc)
    console.print(f"tenant [bold]{name}[/bold] id={tid}")
    console.print("webhook signing secret (store it now; it is not shown again):")
    print(secret)


@tenants_app.command("list")
def tenants_list() -> None:
    from sqlalchemy import select

    with session_scope(sessions()) as s:
        rows = s.scalars(select(Tenant).order_by(Tenant.created_at)).all()
        table = Table("id", "name", "callback", "buckets")
        for t in rows:
            table.add_row(str(t.id), t.name, t.callback_url or "-", ",".join(t.allowed_buckets) or "-")
    console.print(table)


@keys_app.command("create")
def keys_create(
    role: Annotated[Role, typer.Option(help="lms, teacher or ops.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant name or id (lms and teacher keys).")] = None,
    course: Annotated[list[str], typer.Option(help="A course in a teacher's scope (repeat).")] = [],  # noqa: B006
    name: Annotated[str, typer.Option(help="A label for lists and logs.")] = "",
) -> None:
    """Create an API key and print it (shown once)."""
    try:
        with session_scope(sessions()) as s:
            owner = get_tenant(s, tenant) if tenant else None
            key, plaintext = create_api_key(s, role, name=name, tenant=owner, courses=course)
            kid = key.id
    except AccountError as exc:
        _refuse(exc)
    console.print(f"{role.value} key id={kid} (store it now; it is not shown again):")
    print(plaintext)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id or its 12-character prefix.")]) -> None:
    try:
        with session_scope(sessions()) as s:
            revoked = revoke_api_key(s, key)
            kid = revoked.id
    except AccountError as exc:
        _refuse(exc)
    console.print(f"revoked key {kid}")


@keys_app.command("list")
def keys_list() -> None:
    from sqlalchemy import select

    with session_scope(sessions()) as s:
        table = Table("id", "prefix", "role", "tenant", "courses", "revoked")
        for k in s.scalars(select(ApiKey).order_by(ApiKey.created_at)).all():
            table.add_row(
                str(k.id), k.prefix, k.role.value, str(k.tenant_id or "-"), ",".join(k.courses) or "-",
                k.revoked_at.isoformat() if k.revoked_at else "-",
            )
    console.print(table)
