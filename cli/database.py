"""`apa-fleet db ...`: schema migrations."""

from __future__ import annotations

import typer
from rich.console import Console

from fleet.checks import ConfigError, check_database, fail
from cli.context import settings

console = Console()
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def _checked_url() -> str:
    cfg = settings()
    try:
        check_database(cfg)
    except ConfigError as exc:
        fail(exc)
    return cfg.effective_database_url


@db_app.command("upgrade")
def upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from migrations.runner import upgrade as run_upgrade

    url = _checked_url()
    run_upgrade(url, revision)
    console.print(f"database at {revision}")


@db_app.command("downgrade")
def downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (`base` empties the schema)."""
    from migrations.runner import downgrade as run_downgrade

    run_downgrade(_checked_url(), revision)
    console.print(f"database at {revision}")
