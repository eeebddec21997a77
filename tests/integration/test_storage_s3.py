"""Object storage against moto's S3 server over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fleet.checks import ConfigError, check_storage
from fleet.settings import Settings
from fleet.storage import AccessDenied, ObjectNotFound, ObjectStore, ObjectTooLarge, StorageUnavailable
from tests.conftest import free_port, wait_for_port


def test_put_get_head_list(s3_store: ObjectStore, s3_bucket: str) -> None:
    base = f"s3://{s3_bucket}/batch-1/"
    s3_store.put(base + "a.flac", b"aaaa")
    s3_store.put(base + "b/c.flac", b"bb")
    s3_store.put(f"s3://{s3_bucket}/other/x", b"x")
    assert s3_store.get(base + "a.flac") == b"aaaa"
    assert s3_store.head(base + "b/c.flac").size == 2
    assert [o.uri for o in s3_store.list(base)] == [base + "a.flac", base + "b/c.flac"]


def test_specific_errors(s3_store: ObjectStore, s3_bucket: str) -> None:
    with pytest.raises(ObjectNotFound):
        s3_store.get(f"s3://{s3_bucket}/missing.wav")
    with pytest.raises(ObjectNotFound):
        s3_store.head(f"s3://{s3_bucket}/missing.wav")
    with pytest.raises(ObjectNotFound):
        s3_store.get("s3://no-such-bucket-here/k")
    s3_store.put(f"s3://{s3_bucket}/big", b"0" * 1000)
    with pytest.raises(ObjectTooLarge, match="1000 bytes"):
        s3_store.get(f"s3://{s3_bucket}/big", max_bytes=999)
    assert len(s3_store.get(f"s3://{s3_bucket}/big", max_bytes=1000)) == 1000


def test_unreachable_endpoint_is_transient(tmp_path) -> None:
    store = ObjectStore(tmp_path, backend="s3", endpoint_url=f"http://127.0.0.1:{free_port()}", access_key_id="a",
                        secret_access_key="b", connect_timeout_s=0.5, max_attempts=1)
    with pytest.raises(StorageUnavailable):
        store.get("s3://b/k")


def test_access_denied_and_bad_credentials(tmp_path) -> None:
    """moto with authentication enforced (INITIAL_NO_AUTH_ACTION_COUNT): a real IAM user without
    permissions is denied (bad input: the object is not ours to read); unknown credentials are the
    service's own fault (a rotation), so they are transient, not a verdict on the submission."""
    import boto3

    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="2")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")
        iam.create_user(UserName="nobody")
        creds = iam.create_access_key(UserName="nobody")["AccessKey"]
        store = ObjectStore(tmp_path, backend="s3", endpoint_url=endpoint, access_key_id=creds["AccessKeyId"],
                            secret_access_key=creds["SecretAccessKey"], max_attempts=1)
        with pytest.raises(AccessDenied):
            store.get("s3://somebucket/k")
        unknown = ObjectStore(tmp_path, backend="s3", endpoint_url=endpoint, access_key_id="unknown",
                              secret_access_key="nothing", max_attempts=1)
        with pytest.raises(StorageUnavailable, match="credentials"):
            unknown.get("s3://somebucket/k")
    finally:
        proc.terminate()
        proc.wait(10)


def test_missing_bucket_is_a_config_error(s3_server: str, s3_bucket: str) -> None:
    good = Settings(storage_backend="s3", s3_endpoint_url=s3_server, s3_access_key_id="t", s3_secret_access_key="t", bucket=s3_bucket)
    check_storage(good)
    bad = Settings(storage_backend="s3", s3_endpoint_url=s3_server, s3_access_key_id="t", s3_secret_access_key="t", bucket="absent-bucket")
    with pytest.raises(ConfigError, match="APA_BUCKET"):
        check_storage(bad)


def test_a_size_limited_get_is_one_request(s3_store: ObjectStore, s3_bucket: str) -> None:
    """A scoring job fetches its audio with a size limit: one GET whose Content-Length is checked
    before the body is read, not a HEAD and then a GET (a round trip per job)."""
    calls: list[str] = []
    s3_store.s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    s3_store.put(f"s3://{s3_bucket}/clip", b"1" * 500)
    calls.clear()
    assert s3_store.get(f"s3://{s3_bucket}/clip", max_bytes=500) == b"1" * 500
    with pytest.raises(ObjectTooLarge, match="500 bytes"):
        s3_store.get(f"s3://{s3_bucket}/clip", max_bytes=499)
    assert calls == ["GetObject", "GetObject"]
