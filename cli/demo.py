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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from standardwebhooks import Webhook

from fleet.settings import Settings

console = Console()
DEMO_TENANT = "demo-lms"
DEMO_COURSE = "demo-course"
LEGEND = (  # each line under 80 columns
    "Each cell is value (expected value): the score the model chose, and the mean\n"
    "of the scores it allowed weighted by their probability (it breaks ties).\n"
    "Sentence and word scores are 0-10, 10 = native-like; complete = share of the\n"
    "words read. Words below: accuracy/stress/total, also 0-10."
)
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
    learner: str


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
        for i, line in enumerate(lines):
            item = json.loads(line)
            clips.append(DemoClip(item["utt_id"], item["text"], (folder / item["audio"]).read_bytes(),
                                  [w["phones"] for w in item["words"]], f"learner-{i + 1}"))
        return clips
    import soundfile as sf  # here, not at import: `apa-fleet gateway` loads this module too

    from fleet.speech_synth import synthesize

    clips = []
    for i, text in enumerate(SYNTH_SENTENCES[:n]):
        audio, rate = synthesize(text)
        buf = io.BytesIO()
        sf.write(buf, audio, rate, format="FLAC")
        clips.append(DemoClip(f"synth-{i}", text, buf.getvalue(), None, f"learner-{i + 1}"))
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


def demo_key_file(cfg: Settings) -> Path:
    return cfg.var_dir.resolve() / "demo-lms.key"


def _demo_credentials(cfg: Settings) -> tuple[str, str, uuid.UUID]:
    """The demo tenant's signing secret and an lms key: the one kept in var/ while it still works.

    Keys are stored hashed, so the plaintext is kept (mode 0600) next to the embedded state instead
    of minting a new key on every run.
    """
    from sqlalchemy import select

    from db.accounts import create_api_key, create_tenant, find_active_key
    from db.engine import make_engine, make_session_factory, session_scope
    from db.models import Role, Tenant

    key_file = demo_key_file(cfg)
    engine = make_engine(cfg.effective_database_url)
    with session_scope(make_session_factory(engine)) as s:
        tenant = s.scalar(select(Tenant).where(Tenant.name == DEMO_TENANT)) or create_tenant(s, DEMO_TENANT)
        key = key_file.read_text().strip() if key_file.exists() else ""
        found = find_active_key(s, key) if key else None
        if found is None or found.tenant_id != tenant.id:
            _, key = create_api_key(s, Role.lms, name="demo", tenant=tenant)
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.touch(mode=0o600)
            key_file.write_text(key + "\n")
        secret, tenant_id = tenant.webhook_secret, tenant.id
    engine.dispose()
    return secret, key, tenant_id


def _fmt(score: dict | None) -> str:
    return "-" if not score else f"{score['value']} ({score['expected']:.1f})"


def _submit(http: httpx.Client, cfg: Settings, secret: str, key: str, clip: DemoClip, uri: str, run_id: str) -> str | None:
    from datetime import datetime, timezone

    body = json.dumps({
        "submission_id": f"demo-{run_id}-{clip.name}", "learner_id": clip.learner,
        "course_id": DEMO_COURSE, "reference_text": clip.text, "reference_phones": clip.phones,
        "audio_uri": uri, "granularity": "full",
    })
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = time.time()
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(now, timezone.utc), body)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now)), "webhook-signature": signature,
               "content-type": "application/json", cfg.api_key_header: key}
    r = http.post("/v1/submissions", content=body, headers=headers)
    if r.status_code not in (200, 202):
        console.print(f"[red]{clip.name}: rejected {r.status_code}[/red] {r.text}", highlight=False)
        return None
    return r.json()["id"]


def _wait_results(http: httpx.Client, cfg: Settings, key: str, ids: dict[str, str], timeout_s: float,
                  check: Callable[[], None]) -> dict[str, dict]:
    """Poll for the results, quietly: one request per round for the oldest unfinished submission,
    with a growing pause (the gateway logs every request, and the worker scores the clips in one
    batch, so they finish together); the others are asked for once that one is done."""
    results: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    pause = 1.0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scoring", total=len(ids))
        while len(results) < len(ids) and time.monotonic() < deadline:
            check()
            for name, sid in ids.items():
                if name in results:
                    continue
                got = http.get(f"/v1/submissions/{sid}", headers={cfg.api_key_header: key}).json()
                if got["status"] not in ("scored", "failed"):
                    break
                results[name] = got
                progress.advance(task)
            else:
                break
            time.sleep(pause)
            pause = min(pause * 1.5, 6.0)
    return results


def _print_results(cfg: Settings, clips: list[DemoClip], ids: dict[str, str], results: dict[str, dict],
                   key: str, out: Console = console) -> None:
    """A table that fits 80 columns, a legend, the words, the key and what to try next."""
    title = "apa-fleet demo" + (" (tiny random model: scores mean nothing)" if cfg.scores_are_tiny else f" (engine {cfg.effective_engine})")
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("clip", no_wrap=True)
    table.add_column("learner", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for col in ("accuracy", "fluency", "prosody", "complete", "total"):
        table.add_column(col, no_wrap=True, justify="right")
    by_name = {c.name: c for c in clips}
    notes: list[str] = []
    for name in ids:
        clip, got = by_name[name], results.get(name)
        if got is None:
            table.add_row(name, clip.learner, "timeout", *["-"] * 5)
            continue
        notes.append(f"{name}  \"{clip.text}\"")
        if got["status"] != "scored":
            table.add_row(name, clip.learner, "failed", *["-"] * 5)
            error = got.get("error") or {}
            notes.append(f"  failed: {error.get('code')}: {error.get('message')}")
            continue
        sent = got["scores"]["sentence"] or {}
        table.add_row(name, clip.learner, "scored", *(_fmt(sent.get(a)) for a in
                      ("accuracy", "fluency", "prosody", "completeness", "total")))
        words = " ".join(f"{w['text']}:{w['accuracy']['value']}/{w['stress']['value']}/{w['total']['value']}"
                         for w in got["scores"]["words"])
        if words:
            notes.append(f"  words: {words}")
    out.print(table)
    for line in notes:
        out.print(line, highlight=False)
    out.print(LEGEND, highlight=False)
    base = cfg.public_base_url
    first = next(iter(ids.values()), "SUBMISSION_ID")
    out.print(f"\ndemo LMS key (tenant {DEMO_TENANT}, kept in {demo_key_file(cfg)}):", highlight=False)
    out.print(f"  KEY={key}", highlight=False, soft_wrap=True)
    out.print("next, try:", highlight=False)
    for line in (
        f"  curl -H \"X-API-Key: $KEY\" {base}/v1/submissions/{first}",
        f"  curl -H \"X-API-Key: $KEY\" \"{base}/v1/learners/{clips[0].learner}/scores?course_id={DEMO_COURSE}\""
        if clips else "",
        f"  open {base}/docs    # every endpoint, with a form to try it",
    ):
        if line:
            out.print(line, highlight=False, soft_wrap=True)


def run_demo(cfg: Settings, n: int = 3, timeout_s: float = 300, check: Callable[[], None] = lambda: None) -> int:
    """Submit the demo clips as an LMS would and print the scores; 0 if every clip was scored.

    `check` is called while waiting (by `run`: raises if one of its processes died).
    """
    from fleet.storage import ObjectStore

    secret, key, tenant_id = _demo_credentials(cfg)
    store = ObjectStore.from_settings(cfg).for_tenant(tenant_id)  # local paths live in the tenant's folder
    clips = demo_clips(n)
    run_id = uuid.uuid4().hex[:8]
    ids: dict[str, str] = {}
    with httpx.Client(base_url=cfg.public_base_url, timeout=30) as http:
        for clip in clips:
            uri = f"demo/{clip.name}.flac"  # relative: inside the demo tenant's own folder
            store.put(uri, clip.flac)
            sid = _submit(http, cfg, secret, key, clip, uri, run_id)
            if sid is not None:
                ids[clip.name] = sid
        results = _wait_results(http, cfg, key, ids, timeout_s, check)
    _print_results(cfg, clips, ids, results, key)
    return 0 if len(results) == len(clips) and all(r["status"] == "scored" for r in results.values()) else 1


def demo(
    clips: int = 3,
) -> None:
    """Submit the demo recordings to a running gateway (APA_PUBLIC_BASE_URL) and print the scores."""
    import typer

    from cli.context import settings

    cfg = settings()
    try:
        wait_ready(cfg.public_base_url, timeout_s=10)
    except TimeoutError as exc:
        console.print(f"[red]error:[/red] {exc}; start it with `apa-fleet run` or `apa-fleet gateway`")
        raise typer.Exit(2) from None
    raise typer.Exit(run_demo(cfg, n=clips))
