"""What a newcomer meets in the CLI before the service runs: no schema, keys that could never work."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_no_database_is_one_line_and_creates_nothing(cli_env: dict[str, str]) -> None:
    db_file = Path(cli_env["APA_VAR_DIR"]) / "apa-fleet.db"
    for args in (["tenants", "list"], ["keys", "list"], ["keys", "create", "--role", "ops"]):
        proc = run_cli(args, cli_env, check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "apa-fleet db upgrade" in lines[0] and f"sqlite:///{db_file}" in lines[0]
        assert not db_file.exists()  # not silently created empty


def test_empty_database_asks_for_the_upgrade(cli_env: dict[str, str]) -> None:
    var = Path(cli_env["APA_VAR_DIR"])
    var.mkdir(parents=True)
    (var / "apa-fleet.db").touch()  # e.g. left by an older version
    proc = run_cli(["tenants", "list"], cli_env, check=False)
    assert proc.returncode == 2
    assert "has no schema" in proc.stderr and "apa-fleet db upgrade" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    run_cli(["db", "upgrade"], cli_env)
    assert run_cli(["tenants", "list"], cli_env).returncode == 0


def test_teacher_key_without_tenant_is_refused(cli_env: dict[str, str]) -> None:
    run_cli(["db", "upgrade"], cli_env)
    proc = run_cli(["keys", "create", "--role", "teacher", "--course", "bio-101"], cli_env, check=False)
    assert proc.returncode == 1
    assert "teacher key belongs to a tenant" in proc.stdout and "apa_" not in proc.stdout
    run_cli(["tenants", "create", "acme"], cli_env)
    ok = run_cli(["keys", "create", "--role", "teacher", "--tenant", "acme", "--course", "bio-101"], cli_env)
    assert ok.stdout.strip().splitlines()[-1].startswith("apa_")
