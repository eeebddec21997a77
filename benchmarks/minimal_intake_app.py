"""The floor the gateway's intake is measured against: the least a webhook intake must do.

    APA_MIN_DSN=... APA_MIN_SECRET=whsec_... APA_MIN_BROKER=redis://... APA_MIN_TENANT=<uuid> \
        python -m uvicorn benchmarks.minimal_intake_app:app --port 8100

One FastAPI route: verify the Standard Webhooks HMAC, one `INSERT ... ON CONFLICT DO NOTHING
RETURNING id` into `submissions` from a psycopg pool, one Celery publish of the id to the score
queue, answer 202. No API key, no tenant look-up, no reference or audio check, no metrics: what is
left is the essential work (issue 10), so the gateway's figure divided by this one is the share of
the machine its own extra work costs. Used only by benchmarks/bench_intake.py.
"""

from __future__ import annotations

import json
import os
import queue
import uuid

import psycopg
from celery import Celery
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from standardwebhooks import Webhook

SECRET = os.environ["APA_MIN_SECRET"]
TENANT = os.environ["APA_MIN_TENANT"]
pool: queue.Queue[psycopg.Connection] = queue.Queue()  # ten autocommit connections, opened once
for _ in range(10):
    pool.put(psycopg.connect(os.environ["APA_MIN_DSN"], autocommit=True))
celery = Celery("apa_min", broker=os.environ["APA_MIN_BROKER"], set_as_current=False)
celery.conf.update(task_serializer="json", task_ignore_result=True)
hook = Webhook(SECRET)
app = FastAPI()

INSERT = (
    "INSERT INTO submissions (id, tenant_id, lms_submission_id, webhook_id, learner_id, course_id, reference_text,"
    " audio_uri, granularity, status, attempts, created_at, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'full', 'queued', 0, now(), now())"
    " ON CONFLICT DO NOTHING RETURNING id"
)


@app.post("/v1/submissions", status_code=202)
async def submit_async(request: Request) -> Response:
    """Read the body on the loop, do the blocking work (HMAC, INSERT, publish) in the thread pool."""
    body = await request.body()
    return await run_in_threadpool(_accept, body, dict(request.headers))


def _accept(body: bytes, headers: dict[str, str]) -> Response:
    try:
        hook.verify(body, headers)
    except Exception:
        return Response(status_code=401)
    data = json.loads(body)
    sid = uuid.uuid4()
    conn = pool.get()
    try:
        row = conn.execute(INSERT, (sid, TENANT, data["submission_id"], headers["webhook-id"], data["learner_id"],
                                    data["course_id"], data["reference_text"], data["audio_uri"])).fetchone()
    finally:
        pool.put(conn)
    if row is None:
        return Response(status_code=200)
    celery.send_task("apa.score", args=[str(sid)], queue="score")
    return Response(content=json.dumps({"id": str(sid)}), status_code=202, media_type="application/json")
