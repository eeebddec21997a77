"""The adapter registry: adapters in object storage, their rows in Postgres, and the promotion gate.

An adapter version is a folder prefix in object storage, `<adapter_prefix><version>/`, holding
`adapter_config.json`, `adapter_model.safetensors` and `metrics.json`; score workers copy every
object under it (ObjectStore.download_folder). Its row says `candidate`, `active` or
`retired`.

Promotion gate (`gate`): the candidate is promoted automatically only if, on the job's held-out
set, its mean correlation over the headline aspects beats the baseline's (the active adapter, or
the base model when none is active) and none of its headline correlations is NaN. The correlation
is SCC of the expected scores by default (the paper argues SCC reflects ordinal quality better
than PCC; `promote_metric="pcc"` switches). Headline aspects the granularity mode does not produce
are left out, and so are aspects whose held-out gold is constant (unmeasurable for any model, as
completeness is in the paper); a candidate NaN on a measurable aspect (its predictions are
constant) blocks promotion; a baseline NaN counts as 0 (no rank information). Ops can always
activate by hand.

Activation, rollback and the registry's queries live in `db.adapters` (the gateway calls them
without importing this package) and are re-exported here. After a training run the candidate row
is committed first and promoted in its own transaction (`record_candidate`), so an ops activation
at the same moment can cost the candidate its promotion, never the job.
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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified

from db.adapters import (  # noqa: F401 - re-exported: the registry API in one place
    RegistryError,
    activate,
    active_adapter,
    get_adapter,
    list_adapters,
    previous_active,
    rollback,
)
from db.engine import session_scope
from db.models import Adapter, AdapterStatus
from fleet.settings import Settings
from fleet.storage import ObjectStore

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def base_model_name(settings: Settings, engine: str | None = None) -> str:
    """The registry key of an engine's versions (default: the scoring engine's; the same key the
    score workers look up): `gop` for gop heads, the base model for LoRA adapters."""
    return settings.registry_key(engine)


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


def gate(candidate: dict[str, Any], baseline: dict[str, Any], headline: list[str], metric: str = "scc", *,
         n_heldout: int | None = None, min_heldout: int = 1) -> GateDecision:
    """Does the candidate beat the baseline on the headline aspects? (see module docstring)

    With fewer than `min_heldout` held-out utterances the correlations are noise (or NaN), so the
    answer is no, saying so plainly, whatever the numbers say."""
    if n_heldout is not None and n_heldout < min_heldout:
        return GateDecision(False, f"held-out set too small to decide: {n_heldout} utterance(s), fewer than "
                            f"min_heldout={min_heldout} (APA_TRAIN_MIN_HELDOUT); not promoted automatically",
                            metric, [], None, None)
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


def record_candidate(sessions: sessionmaker[Session], *, version: str, uri: str, base_model: str,
                     metrics: dict[str, Any], training_job_id: uuid.UUID | None, decision: GateDecision,
                     compared_with: str | None, auto_promote: bool = True) -> tuple[bool, str]:
    """Register the uploaded adapter as a candidate, commit, then try to promote it.

    Two transactions, so that the adapter (already in storage) is never orphaned: the candidate
    row is committed first; promotion runs in its own transaction. An ops activation landing at
    the same moment makes the promotion lose (the one-active index refuses it, or the re-check
    sees the new active adapter): the adapter stays a candidate and the job still succeeds.
    Idempotent across attempts of one job (the row is found by version). Sets
    metrics["promoted"] and metrics["promotion"]; returns (promoted, why).
    """
    with session_scope(sessions) as s:
        row = s.scalar(select(Adapter).where(Adapter.version == version))
        if row is None:
            row = register_candidate(s, version=version, uri=uri, base_model=base_model, metrics=dict(metrics),
                                     training_job_id=training_job_id)
        row_id = row.id
    try:
        with session_scope(sessions) as s:
            row = s.get(Adapter, row_id)
            if row.status == AdapterStatus.active:  # an earlier attempt promoted it already
                promoted, why = True, str(metrics.get("promotion") or f"promoted: {decision.reason}")
            else:
                promoted, why = promote_if_better(s, row, decision, compared_with=compared_with,
                                                  auto_promote=auto_promote)
    except IntegrityError:
        with sessions() as s:
            now_active = active_adapter(s, base_model)
        promoted = False
        why = (f"kept as candidate: {now_active.version if now_active else 'another adapter'} was activated "
               "at the same moment")
        log.warning("adapter %s: promotion lost a race: %s", version, why)
    metrics["promoted"] = promoted
    metrics["promotion"] = why
    with session_scope(sessions) as s:
        row = s.get(Adapter, row_id)
        row.metrics = dict(metrics)
        flag_modified(row, "metrics")
    return promoted, why
