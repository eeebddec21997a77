"""The OpenAPI document is what the gateway answers: schemathesis against every route, every role.

Real services: a migrated Postgres database (NUL and datetime limits are Postgres's), Redis as the
broker, moto's S3 server. For each role (no key, lms, teacher, ops) and each operation, schemathesis
generates schema-valid and schema-invalid requests (bounded, no shrinking, so the run stays near
half a minute) and checks: no 5xx, every status documented, every body and header as documented.
With the lms key, generated submissions are signed with the tenant's webhook secret, so they reach
the intake checks instead of stopping at the signature.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from migrations.runner import upgrade
from tests.helpers_webhooks import signed_headers
from tests.integration.gateway_support import Gateway, make_gateway

REDIS_DB = int(os.environ.get("APA_TEST_REDIS_URL", "redis://127.0.0.1:6379/12").rsplit("/", 1)[1])
EXAMPLES = int(os.environ.get("APA_CONTRACT_EXAMPLES", "6"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
ROLES = [None, "lms_a", "teacher_a_c1", "ops"]


@pytest.fixture(scope="module")
def contract_gw(pg_server: str, s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"apa_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    bucket = f"contract-{uuid.uuid4().hex[:8]}"
    tmp: Path = tmp_path_factory.mktemp("contract")
    try:
        upgrade(url)
        import boto3

        boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket=bucket)
        g = make_gateway(url, s3_server=s3_server, bucket=bucket, tmp_path=tmp, redis_db=REDIS_DB)
        try:
            yield g
        finally:
            g.close()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "anonymous")
def test_every_route_answers_as_documented(contract_gw: Gateway, role: str | None) -> None:
    g = contract_gw
    app = g.client.app
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    headers = {g.settings.api_key_header: g.keys[role]} if role else {}
    signs = role == "lms_a"
    intake_statuses: set[int] = set()
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            def exercise(case) -> None:
                nonlocal calls
                calls += 1
                if signs and operation.method.upper() == "POST" and operation.path == "/v1/submissions":
                    # sign what schemathesis generated, so deliveries get past the signature to intake
                    body = case.body
                    raw = b"" if body is NOT_SET else bytes(body) if isinstance(body, (bytes, bytearray)) \
                        else json.dumps(body).encode()
                    signed = {**headers, **signed_headers(g.a.secret, raw), "content-type": "application/json"}
                    response = g.client.post("/v1/submissions", content=raw, headers=signed, params=case.query)
                    intake_statuses.add(response.status_code)
                else:
                    response = case.call(headers=headers)
                try:
                    case.validate_response(response, checks=CHECKS, headers=headers)
                except Exception as exc:  # collect every failure, then report them all
                    failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")

            try:
                exercise()
            except Unsatisfiable:  # no schema-invalid request exists (an operation without inputs)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert calls > 0
    if signs:  # signed deliveries got past the signature: accepted, or refused by the intake checks
        assert intake_statuses - {401}, intake_statuses
    assert not failures, f"{len(failures)} failures:\n" + "\n\n".join(failures[:10])
