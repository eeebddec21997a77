"""The registry's rows: which adapter is active for a base model, activation and rollback.

The database allows one `active` adapter per base model (a unique partial index), so two workers
can never disagree on which adapter scores. `activate` retires the current active adapter and
activates the new one in ONE transaction: retire, flush, then activate, so the unique index never
sees two actives. Rollback is activating the previously active version.

Database only (no storage, no torch): the gateway's ops routes, the training worker and the CLI
all call these; `training_jobs.registry` adds storage and the promotion gate on top.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Adapter, AdapterStatus

log = logging.getLogger(__name__)


class RegistryError(ValueError):
    """An adapter that does not exist, or a request the registry cannot honour."""


def get_adapter(session: Session, adapter_id_or_version: uuid.UUID | str) -> Adapter:
    key = str(adapter_id_or_version)
    row = None
    try:
        row = session.get(Adapter, uuid.UUID(key))
    except ValueError:
        pass
    if row is None:
        row = session.scalar(select(Adapter).where(Adapter.version == key))
    if row is None:
        raise RegistryError(f"no adapter {key!r}")
    return row


def active_adapter(session: Session, base_model: str) -> Adapter | None:
    return session.scalar(
        select(Adapter).where(Adapter.base_model == base_model, Adapter.status == AdapterStatus.active)
    )


def list_adapters(session: Session, base_model: str | None = None) -> list[Adapter]:
    """Newest first."""
    stmt = select(Adapter).order_by(Adapter.created_at.desc(), Adapter.version.desc())
    if base_model is not None:
        stmt = stmt.where(Adapter.base_model == base_model)
    return list(session.scalars(stmt))


def activate(session: Session, adapter_id_or_version: uuid.UUID | str) -> Adapter:
    """Make the adapter active for its base model, retiring the current one; the caller commits.

    Retire first and flush, then activate: the unique partial index (one active per base model)
    is checked per statement, so the order matters. Under a concurrent activation, one of the
    two transactions fails on that index instead of leaving two actives. Idempotent.
    """
    row = get_adapter(session, adapter_id_or_version)
    current = session.scalar(
        select(Adapter)
        .where(Adapter.base_model == row.base_model, Adapter.status == AdapterStatus.active)
        .with_for_update()
    )
    if current is not None and current.id == row.id:
        return row
    if current is not None:
        current.status = AdapterStatus.retired
        session.flush()
    row.status = AdapterStatus.active
    row.activated_at = datetime.now(timezone.utc)
    session.flush()
    log.info("adapter %s is now active for %s (was %s)", row.version, row.base_model,
             current.version if current is not None else "none")
    return row


def previous_active(session: Session, base_model: str) -> Adapter | None:
    """The adapter that was active before the current one (the most recently activated other one)."""
    current = active_adapter(session, base_model)
    stmt = (
        select(Adapter)
        .where(Adapter.base_model == base_model, Adapter.activated_at.is_not(None))
        .order_by(Adapter.activated_at.desc())
    )
    for row in session.scalars(stmt):
        if current is None or row.id != current.id:
            return row
    return None


def rollback(session: Session, base_model: str) -> Adapter:
    """Activate the previously active version again (the current one is retired)."""
    prev = previous_active(session, base_model)
    if prev is None:
        raise RegistryError(f"no previously active adapter for {base_model!r} to roll back to")
    return activate(session, prev.id)


__all__ = ["RegistryError", "activate", "active_adapter", "get_adapter", "list_adapters", "previous_active", "rollback"]
