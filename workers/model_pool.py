"""The process's scoring engine; for Qwen2-Audio with its active LoRA adapter, switched without a restart.

Before each batch the pool reads the active adapter of its base model from the registry (one
indexed query); when ops promote another version, the next batch downloads it once into a local
cache and switches to it with peft, leaving the base weights in memory.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Adapter, AdapterStatus
from fleet.settings import Settings
from fleet.storage import ObjectStore

log = logging.getLogger(__name__)


def ensure_model_files(settings: Settings) -> str:
    """The configured model path; in the embedded mode the tiny model is built on first use."""
    path = settings.effective_model_path
    if settings.uses_tiny_model and not (Path(path) / "config.json").exists():
        from pronunciation.tiny_model import build_tiny_model

        log.warning("building the tiny Qwen2-Audio at %s (random weights: its scores mean nothing)", path)
        build_tiny_model(path)
    return path


class ModelPool:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], store: ObjectStore) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self._model = None
        self._lock = threading.Lock()

    @property
    def base_model(self) -> str:
        return self.settings.registry_base_model

    def model(self):
        """The process's engine (pronunciation.engines), loaded on first use."""
        with self._lock:
            if self._model is None:
                from pronunciation.engines import load_engine

                path = ensure_model_files(self.settings) if self.settings.effective_engine == "qwen2-audio" else None
                self._model = load_engine(self.settings.effective_engine, model_path=path, device=self.settings.device,
                                          head_dir=self.settings.gop_head_dir or None)
            return self._model

    def active_adapter(self) -> tuple[str, str] | None:
        with self.sessions() as s:
            row = s.execute(
                select(Adapter.version, Adapter.uri).where(
                    Adapter.base_model == self.base_model, Adapter.status == AdapterStatus.active
                )
            ).first()
        return (row.version, row.uri) if row else None

    def ready_model(self):
        """What `pronunciation.assess.assess` scores with: the gop engine as loaded, or the Qwen2-Audio
        model with the registry's active adapter switched in (or none when none is active)."""
        engine = self.model()
        if not hasattr(engine, "model"):  # an engine without LoRA adapters (gop) scores as loaded
            return engine
        model = engine.model
        wanted = self.active_adapter()
        current = model.active_adapter_version
        if wanted is None:
            if current is not None:
                model.activate(None)
            return model
        version, uri = wanted
        if current != version:
            try:
                if version not in model.adapter_versions:
                    local = self.settings.var_dir.resolve() / "cache" / "adapters" / version
                    if not (local / "adapter_config.json").exists():
                        self.store.download_folder(uri, local)
                    model.load_adapter(str(local), version)
                model.activate(version)
                log.info("scoring with adapter %s", version)
            except Exception:
                # A broken or unreachable adapter must not stop scoring: keep the current one
                # (every result records the version that really produced it) and try again next batch.
                log.exception("could not switch to adapter %s; still scoring with %s", version, current)
        return model
