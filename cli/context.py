"""What every command needs: settings (checked) and a database session factory."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.orm import Session, sessionmaker

from fleet.checks import ConfigError, check_database, check_storage, fail, load_settings
from fleet.settings import Settings


@lru_cache
def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(exc)


@lru_cache
def sessions() -> sessionmaker[Session]:
    """A session factory on a reachable database (one clear error otherwise)."""
    from db.engine import make_engine, make_session_factory

    from cli.schema import require_schema

    cfg = settings()
    try:
        require_schema(cfg)
    except ConfigError as exc:
        fail(exc)
    return make_session_factory(make_engine(cfg.effective_database_url))


def checked_settings(*, schema: bool = False) -> Settings:
    """Settings whose database and object store answer (one clear error and exit 2 otherwise).

    `schema=True` also requires the latest migration (without creating an empty SQLite file).
    """
    from cli.schema import require_schema

    cfg = settings()
    try:
        if schema:
            require_schema(cfg)
        else:
            check_database(cfg)
        check_storage(cfg)
    except ConfigError as exc:
        fail(exc)
    return cfg
