"""The process's scoring engine; for Qwen2-Audio with its active LoRA adapter, switched without a restart.

Before each batch the pool reads the active adapter of its base model from the registry (one
indexed query); when ops promote another version, the next batch downloads it once into a local
cache and switches to it with peft, leaving the base weights in memory.

Two adapters stay loaded: the active one and the one it replaced (so a rollback is a switch, not
a download). Every other version is unloaded (peft `delete_adapter`) at the switch, so a worker
that lives through many promotions holds at most two adapters' weights on its GPU.

The gop engine works the same way with its heads: the registry's active `gop` version (a head
folder the training queue built, training_jobs.gop_trainer) is downloaded once and swapped into
the engine before the next batch; with none active, the configured head (APA_GOP_HEAD_DIR or the
shipped one) scores. The active head and the one it replaced stay in memory.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Adapter, AdapterStatus
from fleet.settings import Settings
from fleet.storage import ObjectStore

log = logging.getLogger(__name__)



class ModelPool:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], store: ObjectStore) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self._model = None
        self._lock = threading.Lock()

    @property
    def base_model(self) -> str:
        """The registry key of this process's model versions: the engine's trainer's key."""
        return self.settings.registry_key()

    def model(self):
        """The process's engine (pronunciation.engines), loaded on first use."""
        with self._lock:
            if self._model is None:
                from pronunciation.engines import load_engine

                cfg = self.settings
                self._model = load_engine(cfg.effective_engine, model_path=cfg.effective_model_path, device=cfg.device,
                                          head_dir=cfg.gop_head_dir or None, tiny=cfg.uses_tiny_model,
                                          trim_audio_window=cfg.trim_audio_window)
            return self._model

    def active_adapter(self) -> tuple[str, str] | None:
        with self.sessions() as s:
            row = s.execute(
                select(Adapter.version, Adapter.uri).where(
                    Adapter.base_model == self.base_model, Adapter.status == AdapterStatus.active
                )
            ).first()
        return (row.version, row.uri) if row else None

    @staticmethod
    def _keep_only(model, keep: set[str | None]) -> None:
        """Unload every loaded adapter version not in `keep` (its weights leave the device)."""
        for version in [v for v in model.adapter_versions if v not in keep]:
            model.unload_adapter(version)
            log.info("unloaded adapter %s (only the active and the previous one stay loaded)", version)

    def ready_model(self):
        """What `pronunciation.assess.assess` scores with: the gop engine as loaded, or the Qwen2-Audio
        model with the registry's active adapter switched in (or none when none is active)."""
        engine = self.model()
        if not hasattr(engine, "model"):  # the gop engine: heads instead of LoRA adapters
            return self._ready_gop(engine)
        model = engine.model
        wanted = self.active_adapter()
        current = model.active_adapter_version
        if wanted is None:
            if current is not None:
                model.activate(None)
                self._keep_only(model, {current})
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
                self._keep_only(model, {version, current})
            except Exception:
                # A broken or unreachable adapter must not stop scoring: keep the current one
                # (every result records the version that really produced it) and try again next batch.
                log.exception("could not switch to adapter %s; still scoring with %s", version, current)
        return model

    def _ready_gop(self, engine):
        """The gop engine with the registry's active head swapped in (the configured one when none is)."""
        if not hasattr(self, "_heads"):
            self._heads = {None: engine.head}  # version -> loaded head; None = the configured head
            self._current: str | None = None
        wanted = self.active_adapter()
        version = wanted[0] if wanted else None
        if version == self._current:
            return engine
        try:
            if version not in self._heads:
                from pronunciation.gop.head import HEAD_FILE, GopHead

                local = self.settings.var_dir.resolve() / "cache" / "adapters" / version
                if not (local / HEAD_FILE).exists():
                    self.store.download_folder(wanted[1], local)
                self._heads[version] = GopHead.load(local)
            engine.head = self._heads[version]
            log.info("scoring with gop head %s", version or engine.head.version)
            keep = {None, version, self._current}
            self._heads = {v: h for v, h in self._heads.items() if v in keep}
            self._current = version
        except Exception:
            # as for adapters: a broken or unreachable head must not stop scoring
            log.exception("could not switch to gop head %s; still scoring with %s", version, engine.head.version)
        return engine
