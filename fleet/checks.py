"""Start-up checks: a wrong configuration ends with one message naming the setting, not a traceback."""

from __future__ import annotations

import sys
from typing import NoReturn

from pydantic import ValidationError

from fleet.settings import Settings


class ConfigError(Exception):
    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


def load_settings() -> Settings:
    """Settings from the environment, or a ConfigError naming the first bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(f"APA_{field.upper()}", err["msg"]) from None


def check_database(settings: Settings) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from db.engine import make_engine

    url = settings.effective_database_url
    try:
        engine = make_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except ArgumentError as exc:
        raise ConfigError("APA_DATABASE_URL", f"malformed URL: {exc}") from None
    except (SQLAlchemyError, ModuleNotFoundError) as exc:
        reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        raise ConfigError("APA_DATABASE_URL", f"cannot connect: {reason}") from None


def check_storage(settings: Settings) -> None:
    from fleet.storage import ObjectStore, StorageError, StorageNotConfigured

    store = ObjectStore.from_settings(settings)
    if settings.storage_backend == "s3":
        try:
            store.check_bucket(settings.bucket)
        except StorageNotConfigured as exc:
            raise ConfigError(exc.setting, str(exc)) from None
        except StorageError as exc:
            raise ConfigError("APA_BUCKET", str(exc)) from None
    else:
        try:
            store.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("APA_STORAGE_ROOT", str(exc)) from None


def fail(exc: Exception, code: int = 2) -> NoReturn:
    print(f"apa-fleet: configuration error: {exc}", file=sys.stderr)
    sys.exit(code)
