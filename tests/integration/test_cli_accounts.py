"""The CLI on a real database: secrets shown once, plain refusals, clear configuration errors."""

from __future__ import annotations

from tests.conftest import run_cli


def test_tenant_and_key_lifecycle(database_url: str, cli_env: dict[str, str]) -> None:
    cli_env["APA_DATABASE_URL"] = database_url
    run_cli(["db", "upgrade"], cli_env)
    out = run_cli(["tenants", "create", "acme", "--callback-url", "https://lms.example/cb"], cli_env).stdout
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("whsec_")

    dup = run_cli(["tenants", "create", "acme"], cli_env, check=False)
    assert dup.returncode == 1 and "already exists" in dup.stdout

    key = run_cli(["keys", "create", "--role", "lms", "--tenant", "acme"], cli_env).stdout.strip().splitlines()[-1]
    assert key.startswith("apa_")
    listed = run_cli(["keys", "list"], cli_env).stdout
    assert key[:12] in listed and key not in listed  # only the prefix is ever shown again

    run_cli(["keys", "revoke", key[:12]], cli_env)
    again = run_cli(["keys", "revoke", key[:12]], cli_env, check=False)
    assert again.returncode == 1 and "already revoked" in again.stdout
    unknown = run_cli(["keys", "revoke", "apa_unknown"], cli_env, check=False)
    assert unknown.returncode == 1 and "no API key" in unknown.stdout


def test_bad_configuration_names_the_setting(cli_env: dict[str, str]) -> None:
    cases = {
        "APA_DATABASE_URL=not-a-url": "APA_DATABASE_URL",
        "APA_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:1/nope": "APA_DATABASE_URL",
        "APA_BROKER_URL=http://broker": "APA_BROKER_URL",
    }
    for assignment, setting in cases.items():
        name, value = assignment.split("=", 1)
        env = dict(cli_env, **{name: value})
        proc = run_cli(["db", "upgrade"], env, check=False)
        assert proc.returncode == 2, proc.stderr
        assert setting in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
