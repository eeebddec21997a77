"""The storage backend is a setting, not a guess; unconfigured S3 is a configuration error; a
downloaded prefix never writes outside its target (issue 8 defects 8 and 15, issue 11 item 4).
Against moto's S3 server over HTTP, the gateway app on SQLite, and the `apa-fleet` CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api_gateway.app import create_app
from db.accounts import create_api_key, create_tenant
from db.engine import make_engine, make_session_factory, session_scope
from db.models import Role
from fleet.checks import ConfigError, check_storage
from migrations.runner import upgrade
from fleet.settings import Settings
from fleet.storage import AccessDenied, ObjectStore, StorageNotConfigured
from tests.conftest import run_cli
from tests.helpers_webhooks import signed_json


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path: Path) -> None:
    """A process with no credentials anywhere in boto3's chain (as a pod whose IAM role is missing)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


class App:
    """The gateway on SQLite with one tenant (an lms key) and an ops key."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        upgrade(database_url)
        self.settings = settings
        self.engine = make_engine(database_url)
        sessions = make_session_factory(self.engine)
        with session_scope(sessions) as s:
            tenant = create_tenant(s, "acme", allowed_buckets=["audio"])
            self.tenant_id, self.secret = tenant.id, tenant.webhook_secret
            self.lms = create_api_key(s, Role.lms, tenant=tenant)[1]
            self.ops = create_api_key(s, Role.ops)[1]
        self.client = TestClient(create_app(settings, sessions=sessions))

    def submit(self, audio_uri: str):
        body, headers = signed_json(self.secret, {
            "submission_id": "s1", "learner_id": "l", "course_id": "c", "reference_text": "bear",
            "audio_uri": audio_uri,
        })
        headers[self.settings.api_key_header] = self.lms
        return self.client.post("/v1/submissions", content=body, headers=headers)

    def register_batch(self, uri: str):
        return self.client.post("/v1/annotation-batches", json={"uri": uri},
                                headers={self.settings.api_key_header: self.ops})


def test_the_backend_is_the_setting_not_the_credentials(s3_server: str) -> None:
    creds = {"s3_endpoint_url": s3_server, "s3_access_key_id": "k", "s3_secret_access_key": "s"}
    local = ObjectStore.from_settings(Settings(**creds))  # credentials alone do not switch to S3
    assert local.backend == "local" and not local.s3_configured
    assert local.service_uri("b", "adapters/v1") == str(local.root / "adapters/v1")
    iam = ObjectStore.from_settings(Settings(storage_backend="s3"))  # IAM role: no key, no endpoint
    assert iam.s3_configured and iam.service_uri("b", "adapters/v1") == "s3://b/adapters/v1"
    with pytest.raises(ValueError):
        Settings(storage_backend="gcs")


def test_iam_role_mode_refuses_tenants_local_paths(sqlite_database: str, tmp_path: Path) -> None:
    """S3 with no key and no endpoint (IAM roles) was taken for the local mode: tenants could name
    files on the pod's own disk. The explicit backend refuses them."""
    settings = Settings(var_dir=tmp_path / "var", database_url=sqlite_database, storage_backend="s3")
    app = App(settings, sqlite_database)
    for folder in (settings.effective_storage_root, settings.effective_storage_root / "tenants" / str(app.tenant_id)):
        (folder / "audio").mkdir(parents=True, exist_ok=True)
        (folder / "audio" / "a.wav").write_bytes(b"RIFF0000")
    for uri in ("audio/a.wav", str(settings.effective_storage_root / "audio" / "a.wav")):
        resp = app.submit(uri)
        assert resp.status_code == 422 and resp.json()["detail"]["code"] == "local_path_not_allowed", resp.text
    app.engine.dispose()


def test_local_backend_refuses_s3_uris_as_a_configuration_error(sqlite_database: str, tmp_path: Path) -> None:
    """The embedded default met an s3:// URI with 503 'Unable to locate credentials' (retry
    forever); now it is a 422 that names APA_STORAGE_BACKEND, for submissions and batches alike."""
    with pytest.raises(StorageNotConfigured) as info:
        ObjectStore(tmp_path / "objects").get("s3://audio/a.wav")
    assert info.value.setting == "APA_STORAGE_BACKEND"
    app = App(Settings(var_dir=tmp_path / "var", database_url=sqlite_database), sqlite_database)
    for resp in (app.submit("s3://audio/a.wav"), app.register_batch("s3://apa-fleet/annotation-batches/b1/")):
        assert resp.status_code == 422, resp.text
        detail = resp.json()["detail"]
        assert detail["code"] == "storage_not_configured" and "APA_STORAGE_BACKEND" in detail["message"]
    app.engine.dispose()


def test_missing_s3_credentials_are_a_configuration_error(
    s3_server: str, s3_bucket: str, sqlite_database: str, tmp_path: Path, no_aws_credentials: None
) -> None:
    settings = Settings(var_dir=tmp_path / "var", database_url=sqlite_database, storage_backend="s3",
                        s3_endpoint_url=s3_server, s3_max_attempts=1, bucket=s3_bucket)
    with pytest.raises(StorageNotConfigured) as info:
        ObjectStore.from_settings(settings).head(f"s3://{s3_bucket}/a.wav")
    assert info.value.setting == "APA_S3_ACCESS_KEY_ID" and "IAM role" in str(info.value)
    with pytest.raises(ConfigError, match="APA_S3_ACCESS_KEY_ID"):  # start-up: one line, exit 2
        check_storage(settings)
    app = App(settings, sqlite_database)
    resp = app.submit("s3://audio/a.wav")
    assert resp.status_code == 422 and resp.json()["detail"]["code"] == "storage_not_configured", resp.text
    assert "APA_S3_ACCESS_KEY_ID" in resp.json()["detail"]["message"]
    app.engine.dispose()


def test_cli_train_with_an_unconfigured_s3_is_one_line_and_exit_2(cli_env: dict[str, str]) -> None:
    run_cli(["db", "upgrade"], cli_env)
    proc = run_cli(["train", "--batch", "s3://apa-fleet/annotation-batches/b1/"], cli_env, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "configuration error: APA_STORAGE_BACKEND" in lines[0], proc.stderr


@pytest.mark.parametrize("evil", ["absolute", "dotdot"])
def test_download_folder_refuses_keys_that_leave_the_target(
    s3_store: ObjectStore, s3_bucket: str, tmp_path: Path, evil: str
) -> None:
    outside = tmp_path / "outside" / "evil.bin"
    prefix = f"s3://{s3_bucket}/adapters/v1"
    s3_store.put(f"{prefix}/adapter_model.bin", b"weights")
    key = f"{prefix}/{outside}" if evil == "absolute" else f"{prefix}/x/../../../outside/evil.bin"
    s3_store.put(key, b"pwned")
    assert any(".." in rel or rel.startswith("/") for rel in s3_store.list_relative(prefix)), "moto kept the key"
    target = tmp_path / "work" / "adapters" / "v1"
    with pytest.raises(AccessDenied, match="unsafe object key"):
        s3_store.download_folder(prefix, target)
    assert not outside.exists() and not target.exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written anywhere, no partial copy


def test_a_local_gateway_starts_with_s3_variables_left_in_its_environment(tmp_path: Path) -> None:
    """S3 endpoint and keys set (a shared .env, a copied deployment) but the backend `local`: the
    gateway starts and serves; before, its startup built the S3 client anyway, which refused
    (storage_not_configured) and uvicorn exited: a crash loop from a harmless leftover."""
    settings = Settings(var_dir=tmp_path, storage_backend="local", s3_endpoint_url="http://127.0.0.1:9",
                        s3_access_key_id="k", s3_secret_access_key="s")
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
