"""`apa-fleet lti ...`: register an LMS platform for a tenant, rotate the tool's key, print the
configuration an LMS administrator types in."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from cli.context import sessions, settings

console = Console()
lti_app = typer.Typer(help="LTI 1.3 Advantage tool: platform registrations and keys.", no_args_is_help=True)


@lti_app.command("register")
def register(
    tenant: Annotated[str, typer.Option(help="Tenant name or id the platform's launches belong to.")],
    issuer: Annotated[str, typer.Option(help="The platform's issuer (iss), e.g. https://moodle.example.edu")],
    client_id: Annotated[str, typer.Option(help="The client id the platform gave this tool.")],
    deployment_id: Annotated[list[str], typer.Option(help="Deployment id (repeat for several).")],
    auth_login_url: Annotated[str, typer.Option(help="The platform's OIDC authentication request URL.")],
    auth_token_url: Annotated[str, typer.Option(help="The platform's OAuth 2 access token URL.")],
    keyset_url: Annotated[str, typer.Option(help="The platform's public keyset (JWKS) URL.")],
) -> None:
    """Store (or update) a platform registration for a tenant."""
    from db.accounts import AccountError, get_tenant
    from db.lti import LtiConfigError, register_platform, registration_out, signing_key

    with sessions()() as s:
        try:
            row, created = register_platform(
                s, get_tenant(s, tenant), issuer=issuer, client_id=client_id, deployment_ids=deployment_id,
                auth_login_url=auth_login_url, auth_token_url=auth_token_url, keyset_url=keyset_url,
            )
        except (AccountError, LtiConfigError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        signing_key(s)  # the tool needs a key before the first launch
        out = registration_out(row)
    console.print(f"{'registered' if created else 'updated'} platform {issuer} (client {client_id}) for {tenant}")
    print(json.dumps(out, indent=2))


@lti_app.command("rotate-key")
def rotate_key() -> None:
    """Generate a new signing key; the old one stays published at /lti/jwks for 7 days."""
    from db.lti import rotate_tool_key

    with sessions()() as s:
        row = rotate_tool_key(s)
        kid = row.kid
    console.print(f"new tool signing key kid={kid}")


@lti_app.command("list")
def list_registrations() -> None:
    """Registered platforms, one JSON object per line."""
    from sqlalchemy import select

    from db.lti import registration_out
    from db.models import LtiRegistration

    with sessions()() as s:
        for row in s.scalars(select(LtiRegistration).order_by(LtiRegistration.created_at)):
            print(json.dumps(registration_out(row)))


@lti_app.command("config")
def config(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What the LMS administrator types in when adding the tool."""
    from fleet.lti_config import tool_config

    cfg = tool_config(settings().public_base_url)
    if as_json:
        print(json.dumps(cfg, indent=2))
        return
    for name, value in cfg.items():
        value = "\n    ".join(value) if isinstance(value, list) else value
        print(f"{name.replace('_', ' ')}: {value}")
