"""The layering of the retraining loop: the gateway's training routes write rows and publish tasks
by name, so serving them loads no `training_jobs` (nor numpy, soundfile or torch); `training_jobs`
never imports `workers` (the Celery app comes from `fleet.queue`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

GATEWAY_FORBIDDEN = ("training_jobs", "workers", "numpy", "soundfile", "soxr", "torch", "transformers", "peft")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _top(names: set[str]) -> set[str]:
    return {n.split(".", 1)[0] for n in names}


def test_training_routes_import_no_training_code_statically() -> None:
    bad = _top(_imports(ROOT / "api_gateway" / "routes" / "training.py")) & set(GATEWAY_FORBIDDEN)
    assert not bad, f"api_gateway/routes/training.py imports {sorted(bad)}"
    for path in sorted((ROOT / "api_gateway").rglob("*.py")):
        bad = _top(_imports(path)) & {"training_jobs", "workers"}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_training_jobs_never_imports_workers() -> None:
    for path in sorted((ROOT / "training_jobs").rglob("*.py")):
        assert "workers" not in _top(_imports(path)), f"{path.relative_to(ROOT)} imports workers"


SCRIPT = """
import sys, json
from fastapi.testclient import TestClient
from api_gateway.app import create_app
from db.accounts import create_api_key
from db.engine import make_engine, make_session_factory, session_scope
from db.models import Adapter, AdapterStatus, Role
from migrations.runner import upgrade
from fleet.settings import Settings

settings = Settings(var_dir={var!r})
upgrade(settings.effective_database_url)
sessions = make_session_factory(make_engine(settings.effective_database_url))
with session_scope(sessions) as s:
    key = create_api_key(s, Role.ops)[1]
    s.add(Adapter(version="v1", base_model="m", uri="/x/v1", status=AdapterStatus.candidate))
client = TestClient(create_app(settings))
h = {{settings.api_key_header: key}}
codes = [
    client.post("/v1/annotation-batches", headers=h, json={{"uri": "annotation-batches/b1/"}}).status_code,
    client.post("/v1/annotation-batches", headers=h, json={{"uri": "annotation-batches/b1"}}).status_code,
    client.get("/v1/annotation-batches", headers=h).status_code,
]
job = client.post("/v1/training-jobs", headers=h, json={{"params": {{"epochs": 1}}}})
codes += [job.status_code,
          client.post("/v1/training-jobs", headers=h, json={{"params": {{"epoch": 1}}}}).status_code,
          client.post("/v1/training-jobs", headers=h, json={{"params": {{}}}}).status_code,
          client.get("/v1/training-jobs", headers=h).status_code,
          client.get("/v1/training-jobs/" + job.json()["id"], headers=h).status_code,
          client.get("/v1/training-jobs/" + job.json()["id"] + "/report.md", headers=h).status_code,
          client.get("/v1/adapters", headers=h).status_code,
          client.post("/v1/adapters/v1/activate", headers=h).status_code]
print("CODES", json.dumps(codes))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print("LOADED", json.dumps(loaded))
"""


def test_serving_every_training_route_loads_no_training_code(tmp_path: Path) -> None:
    code = SCRIPT.format(var=str(tmp_path / "var"), forbidden=set(GATEWAY_FORBIDDEN))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    out = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines() if " " in line}
    assert out["CODES"] == "[202, 200, 200, 202, 422, 409, 200, 200, 404, 200, 200]", proc.stdout
    assert out["LOADED"] == "[]", out["LOADED"]
