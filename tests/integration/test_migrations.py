"""The migrations produce exactly the models' schema, on Postgres and on SQLite, and revert cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db.engine import make_engine
from db.models import Base
from migrations.runner import downgrade, upgrade
from tests.conftest import run_cli


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_matches_models_and_downgrade_base_empties(database_url: str) -> None:
    upgrade(database_url)
    assert _diff(database_url) == []
    assert set(Base.metadata.tables) <= _tables(database_url)
    downgrade(database_url, "base")
    assert _tables(database_url) == {"alembic_version"}
    # and back up again: the downgrade left nothing behind that blocks a re-run
    upgrade(database_url)
    assert _diff(database_url) == []


def test_expected_indexes_exist(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    insp = inspect(engine)
    names = {ix["name"] for ix in insp.get_indexes("submissions")}
    assert {"ix_submissions_learner_history", "ix_submissions_course_learner", "ix_submissions_status_age"} <= names
    assert "ix_submissions_course_recent" not in names  # replaced by the covering course index (0011)
    assert "uq_adapters_one_active_per_base" in {ix["name"] for ix in insp.get_indexes("adapters")}
    engine.dispose()


def test_cli_db_upgrade(database_url: str, cli_env: dict[str, str]) -> None:
    cli_env["APA_DATABASE_URL"] = database_url
    proc = run_cli(["db", "upgrade"], cli_env)
    assert "database at head" in proc.stdout
    assert _diff(database_url) == []
