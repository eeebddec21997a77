"""The teachers' pages in a real headless Chromium (Playwright), on a seeded gateway.

One browser and one gateway for the module. Every number on a page is checked against the rows
in the database (recomputed here in Python); scoping is checked by opening other courses',
tenants' and guessed ids; the audio element must load playable audio through the gateway; the
learner chart must be drawn with five series; axe-core finds no serious or critical violation on
any page; each page's screenshot is saved under var/ui-artifacts (APA_UI_ARTIFACTS).
"""

from __future__ import annotations

import statistics
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from playwright import sync_api
from sqlalchemy import select

from db.models import Adapter, AdapterStatus, PhoneScore, SentenceScore, Submission, SubmissionStatus, WordScore
from db.results import as_utc
from tests.ui.seed import AUDIO_SECONDS, WORDS
from tests.ui.server import (
    LiveGateway, axe_violations, launch_chromium, live_gateway, new_bucket, screenshot, sign_in,
)

pytestmark = [pytest.mark.redis]
REDIS_URL = "redis://127.0.0.1:6379/7"


@pytest.fixture(scope="module")
def gw(s3_server: str, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("ui")
    with live_gateway(f"sqlite:///{tmp / 'apa.db'}", s3_server=s3_server, bucket=new_bucket(s3_server),
                      var_dir=tmp / "var", redis_url=REDIS_URL) as g:
        yield g


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


def no_a11y_problems(page) -> None:
    assert axe_violations(page) == []


def c1_expectations(gw: LiveGateway) -> dict[str, dict]:
    """Per learner of acme/c1, from the database: recordings, latest and mean scores, last totals."""
    with gw.sessions() as s:
        rows = s.execute(
            select(Submission, SentenceScore).outerjoin(SentenceScore)
            .where(Submission.tenant_id == gw.seeded.acme, Submission.course_id == "c1")
        ).all()
    out: dict[str, dict] = {}
    for sub, sent in sorted(rows, key=lambda r: (as_utc(r[0].created_at), str(r[0].id))):
        e = out.setdefault(sub.learner_id, {"recordings": 0, "scored": []})
        e["recordings"] += 1
        if sub.status is SubmissionStatus.scored:
            e["scored"].append(sent)
    for e in out.values():
        for a in ("total", "accuracy", "fluency", "prosody"):
            vals = [getattr(x, a) for x in e["scored"]]
            e[f"latest_{a}"] = str(vals[-1])
            e[f"mean_{a}"] = f"{statistics.fmean(vals):.1f}"
        totals = [x.total for x in e["scored"]]
        e["falling"] = len(totals) >= 3 and totals[-3] > totals[-2] > totals[-1]
    return out


def test_sign_in_gives_a_session_cookie_and_never_shows_the_key(gw: LiveGateway, context) -> None:
    page = context.new_page()
    page.goto(f"{gw.url}/ui/courses/c1")
    assert page.url.startswith(f"{gw.url}/ui/login?next=")  # not signed in: the sign-in page, then back
    no_a11y_problems(page)  # the sign-in page too
    key = gw.seeded.keys["teacher_c1"]
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_selector("#learners")
    assert page.url.startswith(f"{gw.url}/ui/courses/c1")
    assert key not in page.url and key not in page.content()
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["apa_ui_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax" and not session["secure"]  # http here
    expires = datetime.fromtimestamp(session["expires"], timezone.utc)
    assert timedelta(hours=7) < expires - datetime.now(timezone.utc) <= timedelta(hours=8, minutes=1)
    assert key not in session["value"]
    assert page.evaluate("() => document.cookie") == ""  # HttpOnly: scripts cannot read it

    page.click("text=Sign out")
    page.wait_for_selector("#api_key")
    page.goto(f"{gw.url}/ui/courses/c1")
    assert "/ui/login" in page.url  # the server-side session is gone


def test_course_page_numbers_flags_sorting_and_no_js(gw: LiveGateway, context, browser) -> None:
    page = sign_in(context, gw.url, gw.seeded.keys["teacher_c1"], "/ui/courses/c1")
    expected = c1_expectations(gw)
    rows = page.locator("#learners tbody tr")
    assert rows.count() == len(expected)
    for i in range(rows.count()):
        row = rows.nth(i)
        learner = row.get_attribute("data-learner")
        e = expected[learner]
        assert row.locator("[data-col=recordings]").inner_text() == str(e["recordings"])
        for a in ("total", "accuracy", "fluency", "prosody"):
            assert row.locator(f"[data-col=latest_{a}]").inner_text() == e[f"latest_{a}"], (learner, a)
            assert row.locator(f"[data-col=mean_{a}]").inner_text() == e[f"mean_{a}"], (learner, a)
        assert row.locator("svg.spark polyline").count() == 1
        label = row.locator("svg.spark").get_attribute("aria-label")
        assert label.endswith(", ".join(str(x.total) for x in e["scored"]))
    flagged = {li.get_attribute("data-learner") for li in page.locator("#flagged li").all()}
    assert flagged == {k for k, e in expected.items() if e["falling"]} == {"L3"}
    assert "M1" not in page.content()  # another course
    assert len(page.locator("#learners tbody tr[data-learner=L1]").all()) == 1  # not globex's L1
    no_a11y_problems(page)
    assert screenshot(page, "course").stat().st_size > 10_000

    page.click("#learners thead >> text=Mean total")  # sort links work: descending first
    page.wait_for_url("**sort=mean_total**")
    order = [r.get_attribute("data-learner") for r in page.locator("#learners tbody tr").all()]
    assert order == sorted(expected, key=lambda k: (-float(expected[k]["mean_total"]), k))

    nojs = browser.new_context(java_script_enabled=False)
    try:
        p2 = sign_in(nojs, gw.url, gw.seeded.keys["teacher_c1"], "/ui/courses/c1")
        assert p2.locator("#learners tbody tr").count() == len(expected)
        p2.click("#learners thead >> text=Recordings")
        p2.wait_for_url("**sort=recordings**")
        assert p2.locator("#learners tbody tr").first.get_attribute("data-learner") == "L1"  # 6 recordings
    finally:
        nojs.close()


def test_learner_page_chart_history_and_practice_list(gw: LiveGateway, context) -> None:
    page = sign_in(context, gw.url, gw.seeded.keys["teacher_c1"], "/ui/learners/L1?course_id=c1")
    page.wait_for_selector("#aspect-chart[data-ready='1']")
    with gw.sessions() as s:
        subs = s.scalars(select(Submission).where(Submission.tenant_id == gw.seeded.acme, Submission.learner_id == "L1",
                                                  Submission.course_id == "c1")).all()
        words = s.execute(select(WordScore.text, WordScore.accuracy).join(Submission)
                          .where(Submission.learner_id == "L1", Submission.tenant_id == gw.seeded.acme)).all()
        phones = s.execute(select(PhoneScore.phone, PhoneScore.accuracy).join(Submission)
                           .where(Submission.learner_id == "L1", Submission.tenant_id == gw.seeded.acme)).all()
    scored = [x for x in subs if x.status is SubmissionStatus.scored]
    chart = page.evaluate("""() => { const c = Chart.getChart(document.getElementById('aspect-chart'));
        return {n: c.data.datasets.length, labels: c.data.datasets.map(d => d.label),
                lengths: c.data.datasets.map(d => d.data.length), drawn: c.getDatasetMeta(0).data.length}; }""")
    assert chart["n"] == 5 and chart["labels"] == ["accuracy", "fluency", "prosody", "completeness", "total"]
    assert chart["lengths"] == [len(scored)] * 5 and chart["drawn"] == len(scored)
    # hovering a point shows its date and value
    box = page.locator("#aspect-chart").bounding_box()
    pt = page.evaluate("() => { const p = Chart.getChart(document.getElementById('aspect-chart')).getDatasetMeta(4).data[0]; return {x: p.x, y: p.y}; }")
    page.mouse.move(box["x"] + pt["x"], box["y"] + pt["y"])
    tip = page.evaluate("() => { const t = Chart.getChart(document.getElementById('aspect-chart')).tooltip; return {title: t.title, body: t.body.map(b => b.lines.join(' '))}; }")
    first = min(scored, key=lambda x: as_utc(x.created_at))
    assert tip["title"] == [as_utc(first.created_at).strftime("%Y-%m-%d %H:%M")]
    assert any(line == "total: 5" for line in tip["body"])

    ids = [r.get_attribute("data-id") for r in page.locator("#recordings tbody tr").all()]
    assert ids == [str(x.id) for x in sorted(subs, key=lambda x: (as_utc(x.created_at), str(x.id)), reverse=True)]
    assert page.locator(f"#recordings tr[data-id='{gw.seeded.failed}'] .status").inner_text() == "failed"

    low_words = sorted({w for w, a in words if a <= 6})
    shown = [t.inner_text() for t in page.locator("#practice-words tbody th").all()]
    assert sorted(shown) == low_words == ["BEAR", "CALL"]
    assert shown[0] == "BEAR"  # equally often low; the lower mean first
    low_phones = {p for p, a in phones if a <= 6}
    assert {t.inner_text() for t in page.locator("#practice-phones tbody th").all()} == low_phones
    no_a11y_problems(page)
    assert screenshot(page, "learner").stat().st_size > 10_000


def test_recording_page_colours_phones_and_plays_audio(gw: LiveGateway, context) -> None:
    page = sign_in(context, gw.url, gw.seeded.keys["teacher_c1"], f"/ui/submissions/{gw.seeded.detailed}")
    items = page.locator("#words > li")
    assert items.count() == len(WORDS)
    for i, (text, acc, phones) in enumerate(WORDS):
        item = items.nth(i)
        band = "poor" if acc <= 3 else "fair" if acc <= 6 else "good"
        assert item.get_attribute("data-word") == text and f"band-{band}" in item.get_attribute("class")
        assert item.locator(".score").inner_text() == f"{acc} {band}"  # number and band name, not colour alone
        for j, (ph, v) in enumerate(phones):
            li = item.locator("li.phone").nth(j)
            pband = "poor" if v <= 3 else "fair" if v <= 6 else "good"
            assert li.get_attribute("data-phone") == ph and li.get_attribute("data-score") == str(v)
            assert f"band-{pband}" in li.get_attribute("class")
            assert f"expected {v * 0.9 + 0.3:.2f}" in li.get_attribute("title")
    colours = page.evaluate("""() => [...document.querySelectorAll('#words > li')].map(e => getComputedStyle(e).backgroundColor)""")
    assert len(set(colours)) == 3  # poor, fair and good really look different
    assert page.locator("#legend li").count() == 3
    assert page.locator("#sentence tr[data-aspect=total] td").first.inner_text() == "7"
    assert page.locator("#model-name").inner_text() == "Qwen/Qwen2-Audio-7B-Instruct"
    assert page.locator("#adapter-version").inner_text() == "v1"

    audio = page.evaluate("""async () => {
        const a = document.getElementById('recording-audio');
        if (a.readyState < 1) await new Promise((ok, bad) => { a.onloadedmetadata = ok; a.onerror = () => bad(String(a.error && a.error.code)); });
        a.muted = true; await a.play();
        const t0 = Date.now();  // playing: the clock advances (waits up to 5 s on a busy machine)
        while (a.currentTime === 0 && !a.ended && Date.now() - t0 < 5000) await new Promise(ok => setTimeout(ok, 50));
        return {duration: a.duration, error: a.error, time: a.currentTime, src: a.currentSrc}; }""")
    assert audio["error"] is None and abs(audio["duration"] - AUDIO_SECONDS) < 0.05 and audio["time"] > 0
    assert audio["src"] == f"{gw.url}/ui/submissions/{gw.seeded.detailed}/audio"  # through the gateway
    assert "X-Amz" not in page.content() and "test" not in audio["src"]
    no_a11y_problems(page)
    assert screenshot(page, "recording").stat().st_size > 10_000

    page.goto(f"{gw.url}/ui/submissions/{gw.seeded.failed}")
    assert "silent" in page.locator("#failure").inner_text()
    assert "audio_silent" in page.locator("#failure").inner_text()
    no_a11y_problems(page)


def test_scoping_teacher_of_another_course_sees_nothing_of_c1(gw: LiveGateway, context) -> None:
    page = sign_in(context, gw.url, gw.seeded.keys["teacher_c2"])
    assert [a.inner_text() for a in page.locator("main table a").all()] == ["c2"]
    checks = {
        "/ui/courses/c1": 403,
        "/ui/learners/L1?course_id=c1": 403,
        "/ui/learners/L1": 404,  # no recording of L1 in c2
        f"/ui/submissions/{gw.seeded.detailed}": 404,
        f"/ui/submissions/{gw.seeded.detailed}/audio": 404,
        f"/ui/submissions/{gw.seeded.other_tenant}": 404,
        f"/ui/submissions/{uuid.uuid4()}": 404,
        "/ui/submissions/not-an-id": 404,
        "/ui/ops": 403,
        f"/ui/ops/training-jobs/{gw.seeded.job}/report.png": 403,
    }
    for path, status in checks.items():
        response = page.goto(f"{gw.url}{path}")
        assert response.status == status, path
        assert "WE CALL" not in page.content() and "L1-c1" not in page.content()
    no_a11y_problems(page)  # the refusal page
    assert page.goto(f"{gw.url}/ui/submissions/{gw.seeded.other_course}").status == 200  # its own course
    no_a11y_problems(page)


def test_ops_page_and_promotion_with_confirmation(gw: LiveGateway, context) -> None:
    for _ in range(3):
        gw.redis.lpush("score", b"{}")  # three messages waiting on the broker's score list
    try:
        page = sign_in(context, gw.url, gw.seeded.keys["ops"], "/ui/ops")
        assert page.locator("#queues tr[data-queue=score] td").inner_text() == "3"
        since = datetime.now(timezone.utc) - timedelta(hours=24)
        with gw.sessions() as s:
            recent = [x.status.value for x in s.scalars(select(Submission)).all() if as_utc(x.created_at) >= since]
        for st in ("queued", "running", "scored", "failed"):
            assert page.locator(f"#status-24h tr[data-status={st}] td").inner_text() == str(recent.count(st))
        assert page.locator(f"#jobs tr[data-job='{gw.seeded.job}'] progress").get_attribute("value") == "120"
        assert page.evaluate("() => document.querySelector('img.thumb').naturalWidth") == 40  # the plot loaded
        png = page.request.get(f"{gw.url}/ui/ops/training-jobs/{gw.seeded.job}/report.png")
        assert png.status == 200 and png.body().startswith(b"\x89PNG")
        no_a11y_problems(page)
        assert screenshot(page, "ops").stat().st_size > 10_000

        # a forged POST (no CSRF token) changes nothing
        forged = page.request.post(f"{gw.url}/ui/ops/adapters/v2/activate", form={"confirm": "yes"},
                                   headers={"Origin": gw.url})
        assert forged.status == 403
        page.click("text=Promote v2")
        page.wait_for_selector("#confirm")
        assert "v1" in page.locator("main").inner_text()  # says which one will be retired
        with gw.sessions() as s:
            assert s.scalar(select(Adapter).where(Adapter.version == "v1")).status is AdapterStatus.active
        no_a11y_problems(page)
        page.click("#confirm")
        page.wait_for_selector("#done")
        with gw.sessions() as s:
            status = {a.version: a.status for a in s.scalars(select(Adapter)).all()}
        assert status == {"v1": AdapterStatus.retired, "v2": AdapterStatus.active}
        assert page.locator("#adapters tr[data-adapter=v2]").get_attribute("data-status") == "active"
        page.click("text=Roll back to v1")  # and back again, through the same confirmation
        page.click("#confirm")
        page.wait_for_selector("#done")
        with gw.sessions() as s:
            assert s.scalar(select(Adapter).where(Adapter.version == "v1")).status is AdapterStatus.active
    finally:
        gw.redis.delete("score")
