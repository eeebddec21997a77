"""A real gateway on a loopback port for the browser tests, and the headless Chromium they drive.

The gateway is `create_app` served by uvicorn in a thread, on a migrated database seeded through
the project's tables (tests/ui/seed.py), moto's S3 server and Redis as the broker. The browser is
Debian's /usr/bin/chromium launched by Playwright (its own browser download is not used).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from api_gateway.app import create_app
from db.engine import make_engine, make_session_factory
from migrations.runner import upgrade
from fleet.settings import Settings
from fleet.storage import ObjectStore
from tests.conftest import free_port, wait_for_port
from tests.ui.seed import Seeded, seed

CHROMIUM = os.environ.get("APA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(os.environ.get("APA_UI_ARTIFACTS", Path(__file__).resolve().parents[2] / "var" / "ui-artifacts"))


@dataclass
class LiveGateway:
    url: str
    sessions: sessionmaker[Session]
    store: ObjectStore
    redis: redis.Redis
    seeded: Seeded


@contextmanager
def live_gateway(database_url: str, *, s3_server: str, bucket: str, var_dir: Path, redis_url: str) -> Iterator[LiveGateway]:
    upgrade(database_url)
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    settings = Settings(
        var_dir=var_dir, database_url=database_url, broker_url=redis_url, storage_backend="s3", s3_endpoint_url=s3_server,
        s3_access_key_id="test", s3_secret_access_key="test", s3_max_attempts=1, s3_connect_timeout_s=2,
    )
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    store = ObjectStore.from_settings(settings)
    seeded = seed(sessions, store, bucket)
    app = create_app(settings, sessions=sessions, store=store)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)
    while not server.started:
        time.sleep(0.02)
    try:
        yield LiveGateway(f"http://127.0.0.1:{port}", sessions, store, r, seeded)
    finally:
        server.should_exit = True
        thread.join(10)
        r.flushdb()
        r.close()
        engine.dispose()


def launch_chromium(playwright: Any) -> Any:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def sign_in(context: Any, base_url: str, key: str, path: str = "/ui/") -> Any:
    """A page signed in through the sign-in form (the key typed into it, as a teacher would)."""
    page = context.new_page()
    page.goto(f"{base_url}{path}")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_load_state("load")
    return page


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core (vendored from npm) run inside the page: the serious and critical violations."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"] if v["impact"] in ("serious", "critical")
    ]


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def new_bucket(s3_server: str) -> str:
    import boto3

    name = f"ui-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=name)
    return name
