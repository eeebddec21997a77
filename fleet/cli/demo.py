"""`apa-fleet demo`: an LMS's view of the service, end to end.

Creates a demo tenant, puts a few recordings in the object store (the shared speechocean762 sample
when it is present, otherwise speech synthesised offline), submits them through signed webhooks,
waits for the scores and prints them as a table.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import soundfile as sf
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from standardwebhooks import Webhook

from fleet.settings import Settings

console = Console()
DEMO_TENANT = "demo-lms"
SYNTH_SENTENCES = [
    "MARK IS GOING TO SEE ELEPHANT",
    "I LIKE TO READ BOOKS",
    "THE WEATHER IS NICE TODAY",
]


@dataclass(frozen=True)
class DemoClip:
    name: str
    text: str
    flac: bytes
    phones: list[list[str]] | None


def sample_dir() -> Path | None:
    env = os.environ.get("APA_DEMO_DATA")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd().parent / "shared/data/speechocean762-sample",
                   Path(__file__).resolve().parents[3] / "shared/data/speechocean762-sample"]
    return next((c for c in candidates if (c / "manifest.jsonl").exists()), None)


def demo_clips(n: int = 3) -> list[DemoClip]:
    folder = sample_dir()
    if folder is not None:
        lines = (folder / "manifest.jsonl").read_text().splitlines()[:n]
        clips = []
        for line in lines:
            item = json.loads(line)
            clips.append(DemoClip(item["utt_id"], item["text"], (folder / item["audio"]).read_bytes(),
                                  [w["phones"] for w in item["words"]]))
        return clips
    from fleet.speech_synth import synthesize

    clips = []
    for i, text in enumerate(SYNTH_SENTENCES[:n]):
        audio, rate = synthesize(text)
        buf = io.BytesIO()
        sf.write(buf, audio, rate, format="FLAC")
        clips.append(DemoClip(f"synth-{i}", text, buf.getvalue(), None))
    return clips


def wait_ready(base_url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the gateway at {base_url} did not answer within {timeout_s:.0f}s")


def _demo_credentials(cfg: Settings) -> tuple[str, str]:
    from sqlalchemy import select

    from db.accounts import create_api_key, create_tenant
    from db.engine import make_engine, make_session_factory, session_scope
    from db.models import Role, Tenant

    engine = make_engine(cfg.effective_database_url)
    with session_scope(make_session_factory(engine)) as s:
        tenant = s.scalar(select(Tenant).where(Tenant.name == DEMO_TENANT)) or create_tenant(s, DEMO_TENANT)
        _, key = create_api_key(s, Role.lms, name="demo", tenant=tenant)
        secret = tenant.webhook_secret
    engine.dispose()
    return secret, key


def _fmt(score: dict | None) -> str:
    return "-" if not score else f"{score['value']} ({score['expected']:.1f})"


def run_demo(cfg: Settings, n: int = 3, timeout_s: float = 300) -> int:
    from fleet.storage import ObjectStore

    secret, key = _demo_credentials(cfg)
    store = ObjectStore.from_settings(cfg)
    clips = demo_clips(n)
    run_id = uuid.uuid4().hex[:8]
    ids: dict[str, str] = {}
    with httpx.Client(base_url=cfg.public_base_url, timeout=30) as http:
        for clip in clips:
            uri = str(store.root / "demo" / f"{clip.name}.flac")
            store.put(uri, clip.flac)
            body = json.dumps({
                "submission_id": f"demo-{run_id}-{clip.name}", "learner_id": f"learner-{clip.name[:4]}",
                "course_id": "demo-course", "reference_text": clip.text, "reference_phones": clip.phones,
                "audio_uri": uri, "granularity": "full",
            })
            msg_id = f"msg_{uuid.uuid4().hex}"
            now = time.time()
            from datetime import datetime, timezone

            signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(now, timezone.utc), body)
            headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now)), "webhook-signature": signature,
                       "content-type": "application/json", cfg.api_key_header: key}
            r = http.post("/v1/submissions", content=body, headers=headers)
            if r.status_code not in (200, 202):
                console.print(f"[red]{clip.name}: rejected {r.status_code}[/red] {r.text}")
                continue
            ids[clip.name] = r.json()["id"]
        results: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_s
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("scoring", total=len(ids))
            while len(results) < len(ids) and time.monotonic() < deadline:
                for name, sid in ids.items():
                    if name in results:
                        continue
                    got = http.get(f"/v1/submissions/{sid}", headers={cfg.api_key_header: key}).json()
                    if got["status"] in ("scored", "failed"):
                        results[name] = got
                        progress.advance(task)
                time.sleep(0.5)
    table = Table(title="apa-fleet demo" + (" (tiny random model: scores mean nothing)" if cfg.scores_are_tiny else f" (engine {cfg.effective_engine})"))
    for col in ("clip", "text", "status", "accuracy", "fluency", "prosody", "complete", "total"):
        table.add_column(col)
    word_lines: list[str] = []
    texts = {c.name: c.text for c in clips}
    for name in ids:
        got = results.get(name)
        if got is None:
            table.add_row(name, texts[name], "timeout", *["-"] * 5)
            continue
        if got["status"] != "scored":
            table.add_row(name, texts[name], f"failed: {got['error']['code']}", *["-"] * 5)
            continue
        sent = got["scores"]["sentence"] or {}
        words = " ".join(f"{w['text']}:{w['accuracy']['value']}/{w['stress']['value']}/{w['total']['value']}"
                         for w in got["scores"]["words"])
        table.add_row(name, texts[name], "scored", *(_fmt(sent.get(a)) for a in
                      ("accuracy", "fluency", "prosody", "completeness", "total")))
        word_lines.append(f"{name} words (accuracy/stress/total): {words}")
    console.print(table)
    for line in word_lines:
        console.print(line)
    return 0 if len(results) == len(clips) and all(r["status"] == "scored" for r in results.values()) else 1


def demo(
    clips: int = 3,
) -> None:
    """Submit the demo recordings to a running gateway (APA_PUBLIC_BASE_URL) and print the scores."""
    import typer

    from fleet.cli.context import settings

    cfg = settings()
    try:
        wait_ready(cfg.public_base_url, timeout_s=10)
    except TimeoutError as exc:
        console.print(f"[red]error:[/red] {exc}; start it with `apa-fleet run` or `apa-fleet gateway`")
        raise typer.Exit(2) from None
    raise typer.Exit(run_demo(cfg, n=clips))
