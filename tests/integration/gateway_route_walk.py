"""Call every route of a real gateway once, in a fresh process, and report what it imported.

    python -m tests.integration.gateway_route_walk DATABASE_URL S3_ENDPOINT BUCKET TMP_DIR REDIS_DB

Run by `test_gateway_footprint` in a subprocess, so `sys.modules` holds only what the gateway
(plus this small driver) pulled in. Prints one JSON line: for every route (method and template)
the status it answered and the forbidden top-level packages that appeared while it ran.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path

FORBIDDEN = ("torch", "transformers", "peft", "accelerate", "numpy", "soundfile", "soxr", "workers", "training_jobs")


def loaded() -> set[str]:
    return {name.split(".")[0] for name in sys.modules} & set(FORBIDDEN)


def main() -> None:
    url, s3_endpoint, bucket, tmp, redis_db = sys.argv[1:6]
    from tests.integration.gateway_support import make_gateway

    g = make_gateway(url, s3_server=s3_endpoint, bucket=bucket, tmp_path=Path(tmp), redis_db=int(redis_db))
    before = sorted(loaded())
    report: dict[str, object] = {"at_start": before, "routes": {}}
    with g.client:  # runs the lifespan (word index, S3 client), as uvicorn would
        accepted = g.post(g.payload())
        assert accepted.status_code == 202, accepted.text
        values = {"submission_id": accepted.json()["id"], "learner_id": "learner-1", "course_id": "c1",
                  "job_id": str(uuid.uuid4()), "kind": "md", "adapter": "v1"}
        bodies = {"/v1/training-jobs": {"params": {}}, "/v1/annotation-batches": {"uri": f"s3://{bucket}/batch/"}}
        ops = {g.settings.api_key_header: g.keys["ops"]}
        app = g.client.app
        # every operation of the OpenAPI document (include_in_schema is never False here), plus the
        # documentation routes themselves
        operations = [(m.upper(), path, True) for path, item in app.openapi()["paths"].items() for m in item]
        operations += [("GET", url, False) for url in (app.openapi_url, app.docs_url, app.redoc_url, "/docs") if url]
        for method, template, api in operations:
            path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "unknown-id"), template)
            seen = loaded()
            if method == "POST" and template == "/v1/submissions":
                resp = g.post(g.payload())
            else:
                body = bodies.get(template) if method == "POST" else None
                resp = g.client.request(method, path, headers=ops, json=body)
            report["routes"][f"{method} {template}"] = {  # type: ignore[index]
                "status": resp.status_code, "api": api, "imported": sorted(loaded() - seen),
            }
    report["at_end"] = sorted(loaded())
    g.close()
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
