"""The adapter registry: adapters in object storage, their rows in Postgres, and the promotion gate.

An adapter version is a folder prefix in object storage, `<adapter_prefix><version>/`, holding
`adapter_config.json`, `adapter_model.safetensors` and `metrics.json`; score workers copy every
object under it (ObjectStore.download_folder). Its row says `candidate`, `active` or
`retired`; the database allows one `active` row per base model (a unique partial index), so two
workers can never disagree on which adapter scores.

Promotion gate (`gate`): the candidate is promoted automatically only if, on the job's held-out
set, its mean correlation over the headline aspects beats the baseline's (the active adapter, or
the base model when none is active) and none of its headline correlations is NaN. The correlation
is SCC of the expected scores by default (the paper argues SCC reflects ordinal quality better
than PCC; `promote_metric="pcc"` switches). Headline aspects the granularity mode does not produce
are left out, and so are aspects whose held-out gold is constant (unmeasurable for any model, as
completeness is in the paper); a candidate NaN on a measurable aspect (its predictions are
constant) blocks promotion; a baseline NaN counts as 0 (no rank information). Ops can always
activate by hand.

`activate` retires the current active adapter and activates the new one in ONE transaction:
retire, flush, then activate, so the unique index never sees two actives. Rollback is activating
the previously active version. No torch here: the gateway calls these.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Adapter, AdapterStatus
from fleet.settings import Settings
from fleet.storage import ObjectStore

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


class RegistryError(ValueError):
    """An adapter that does not exist, or a request the registry cannot honour."""


def base_model_name(settings: Settings) -> str:
    """The registry key of the base model (the same one the score workers look up)."""
    return settings.registry_base_model


def new_version(job_id: uuid.UUID | str | None = None, now: datetime | None = None) -> str:
    """Sortable, unique version names: `v20250314-093012-1a2b3c` (time + job id prefix)."""
    now = now or datetime.now(timezone.utc)
    suffix = uuid.UUID(str(job_id)).hex[:6] if job_id else uuid.uuid4().hex[:6]
    return f"v{now:%Y%m%d-%H%M%S}-{suffix}"


def adapter_uri(store: ObjectStore, settings: Settings, version: str) -> str:
    return store.service_uri(settings.bucket, f"{settings.adapter_prefix.strip('/')}/{version}")


def save_adapter(store: ObjectStore, settings: Settings, folder: Path, version: str, metrics: dict[str, Any]) -> str:
    """Upload an adapter folder (peft save_pretrained output) plus metrics.json; returns its URI.

    The weights go up before the row exists (register_candidate), so no worker can see a
    half-uploaded adapter.
    """
    folder = Path(folder)
    for needed in ("adapter_config.json", "adapter_model.safetensors"):
        if not (folder / needed).is_file():
            raise RegistryError(f"{folder} is not an adapter folder: {needed} is missing")
    uri = adapter_uri(store, settings, version)
    store.put(f"{uri}/{METRICS_FILE}", json.dumps(metrics, indent=2, sort_keys=True).encode(), content_type="application/json")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        store.put(f"{uri}/{name}", (folder / name).read_bytes())
    return uri


def register_candidate(session: Session, *, version: str, uri: str, base_model: str, metrics: dict[str, Any],
                       training_job_id: uuid.UUID | None = None) -> Adapter:
    row = Adapter(version=version, base_model=base_model, uri=uri, status=AdapterStatus.candidate,
                  metrics=metrics, training_job_id=training_job_id)
    session.add(row)
    session.flush()
    return row


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


# -- the promotion gate ----------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    metric: str
    aspects: list[str]
    candidate_mean: float | None
    baseline_mean: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _corr(metrics: dict[str, Any], aspect: str, metric: str) -> float | None:
    value = metrics.get(aspect, {}).get("expected", {}).get(metric)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def gate(candidate: dict[str, Any], baseline: dict[str, Any], headline: list[str], metric: str = "scc") -> GateDecision:
    """Does the candidate beat the baseline on the headline aspects? (see module docstring)"""
    evaluated = [a for a in headline if a in candidate]
    aspects = [a for a in evaluated if candidate[a].get("expected", {}).get("gold_varies", True)]
    if not aspects:
        why = "was evaluated" if not evaluated else "has varying gold scores on the held-out set"
        return GateDecision(False, f"none of the headline aspects {headline} {why}", metric, [], None, None)
    missing = [a for a in aspects if _corr(candidate, a, metric) is None]
    if missing:
        reasons = "; ".join(f"{a}: {candidate[a]['expected'].get('reason')}" for a in missing)
        return GateDecision(False, f"candidate {metric.upper()} is NaN for {missing} ({reasons})", metric, aspects,
                            None, None)
    cand = sum(_corr(candidate, a, metric) for a in aspects) / len(aspects)
    base = sum(_corr(baseline, a, metric) or 0.0 for a in aspects) / len(aspects)
    if cand > base:
        return GateDecision(True, f"mean {metric.upper()} {cand:.3f} > {base:.3f} over {aspects}", metric, aspects,
                            cand, base)
    return GateDecision(False, f"mean {metric.upper()} {cand:.3f} <= {base:.3f} over {aspects}", metric, aspects,
                        cand, base)


def promote_if_better(session: Session, candidate: Adapter, decision: GateDecision, *,
                      compared_with: str | None, auto_promote: bool = True) -> tuple[bool, str]:
    """Activate `candidate` when the gate says so and the active adapter is still the one it was
    compared with (`compared_with`: its version, None = the base model). Returns (promoted, why)."""
    if not auto_promote:
        return False, "kept as candidate: automatic promotion is off"
    if not decision.promote:
        return False, f"kept as candidate: {decision.reason}"
    # Read the active row under the same lock activate() takes, so an ops activation that lands
    # between this check and the switch cannot be overridden (Postgres; SQLite has one writer).
    now_active = session.scalar(
        select(Adapter).where(Adapter.base_model == candidate.base_model, Adapter.status == AdapterStatus.active)
        .with_for_update()
    )
    if (now_active.version if now_active is not None else None) != compared_with:
        return False, (f"kept as candidate: the active adapter changed to "
                       f"{now_active.version if now_active else 'none'} during evaluation")
    activate(session, candidate.id)
    return True, f"promoted: {decision.reason}"
