"""Is the database there, and at the schema this code needs? One line saying what to run if not.

Without this check a command run in the wrong folder silently created an empty SQLite file
(`./var/apa-fleet.db`) and then died with a long `no such table` traceback.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from fleet.checks import ConfigError, check_database
from fleet.settings import Settings

UPGRADE_HINT = "run `apa-fleet db upgrade`"


def shown_url(url: str) -> str:
    """The database URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def require_schema(settings: Settings) -> None:
    """Raise ConfigError unless the database exists, answers and is at the latest migration.

    A missing SQLite file is reported before connecting, because connecting would create it.
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from db.engine import make_engine
    from migrations.runner import alembic_config

    url = settings.effective_database_url
    where = f"{shown_url(url)} (APA_DATABASE_URL; APA_VAR_DIR={settings.var_dir})"
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise ConfigError("APA_DATABASE_URL", f"no database at {where}: {UPGRADE_HINT} first")
    check_database(settings)
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    if not current:
        raise ConfigError("APA_DATABASE_URL", f"the database at {where} has no schema: {UPGRADE_HINT}")
    if current != heads:
        raise ConfigError(
            "APA_DATABASE_URL",
            f"the database at {where} is at revision {','.join(sorted(current))}, this version needs "
            f"{','.join(sorted(heads))}: {UPGRADE_HINT}",
        )
