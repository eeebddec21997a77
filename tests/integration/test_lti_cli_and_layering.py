"""`apa-fleet lti register / rotate-key / config / list` on a real database, and the gateway's LTI
package staying free of workers, numpy, soundfile, soxr, torch and training_jobs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, run_cli

FORBIDDEN = ("workers", "training_jobs", "numpy", "soundfile", "soxr", "torch", "transformers")


def test_lti_cli_register_rotate_config(sqlite_database: str, cli_env: dict[str, str]) -> None:
    cli_env.update({"APA_DATABASE_URL": sqlite_database, "APA_PUBLIC_BASE_URL": "https://apa.example.edu"})
    run_cli(["db", "upgrade"], cli_env)
    run_cli(["tenants", "create", "acme"], cli_env)
    args = ["lti", "register", "--tenant", "acme", "--issuer", "https://moodle.example.edu", "--client-id", "abc",
            "--deployment-id", "1", "--deployment-id", "2",
            "--auth-login-url", "https://moodle.example.edu/mod/lti/auth.php",
            "--auth-token-url", "https://moodle.example.edu/mod/lti/token.php",
            "--keyset-url", "https://moodle.example.edu/mod/lti/certs.php"]
    out = run_cli(args, cli_env).stdout
    assert "registered platform https://moodle.example.edu" in out
    (listed,) = [json.loads(line) for line in run_cli(["lti", "list"], cli_env).stdout.splitlines()]
    assert listed["deployment_ids"] == ["1", "2"] and listed["client_id"] == "abc"
    bad = run_cli([*args[:-2], "--keyset-url", "ftp://nope"], cli_env, check=False)
    assert bad.returncode == 1 and "keyset_url" in bad.stdout
    run_cli(["tenants", "create", "beta"], cli_env)
    stolen = run_cli(["lti", "register", "--tenant", "beta", *args[4:]], cli_env, check=False)
    assert stolen.returncode == 1 and "another tenant" in stolen.stdout

    first = run_cli(["lti", "rotate-key"], cli_env).stdout.split("kid=")[1].strip()
    second = run_cli(["lti", "rotate-key"], cli_env).stdout.split("kid=")[1].strip()
    assert first != second

    cfg = json.loads(run_cli(["lti", "config", "--json"], cli_env).stdout)
    assert cfg["login_initiation_url"] == "https://apa.example.edu/lti/login"
    assert cfg["jwks_url"] == "https://apa.example.edu/lti/jwks"
    assert cfg["redirect_urls"] == ["https://apa.example.edu/lti/launch"]
    assert "https://purl.imsglobal.org/spec/lti-ags/scope/score" in cfg["scopes"]
    assert "login initiation url: https://apa.example.edu/lti/login" in run_cli(["lti", "config"], cli_env).stdout


SCRIPT = """
import sys
from fastapi.testclient import TestClient
from api_gateway.app import create_app
from migrations.runner import upgrade
from fleet.settings import Settings
s = Settings(var_dir={var!r}, broker_url="memory://")
upgrade(s.effective_database_url)
with TestClient(create_app(s)) as c:
    codes = [c.get("/lti/jwks").status_code, c.get("/lti/login?iss=x&login_hint=y").status_code,
             c.post("/lti/launch", data={{"id_token": "a.b.c", "state": "s"}}).status_code,
             c.post("/lti/s/nope/recordings", content=b"x", headers={{"content-type": "audio/wav"}}).status_code]
print("CODES", codes)
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r}))
"""


def test_serving_lti_routes_loads_no_worker_or_audio_code(tmp_path: Path) -> None:
    code = SCRIPT.format(var=str(tmp_path / "var"), forbidden=set(FORBIDDEN))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    out = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines() if " " in line}
    assert out["CODES"] == "[200, 400, 401, 404]", proc.stdout
    assert out["LOADED"] == "[]", out["LOADED"]
