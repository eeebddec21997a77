"""The demo's closing output, as a newcomer reads it in an 80-column terminal."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from cli.demo import DemoClip, _print_results
from fleet.settings import Settings


def _scored(value: int) -> dict:
    score = {"value": value, "expected": value - 0.4}
    sentence = dict.fromkeys(("accuracy", "fluency", "prosody", "completeness", "total"), score)
    words = [{"text": "MARK", "accuracy": score, "stress": score, "total": score}]
    return {"status": "scored", "scores": {"sentence": sentence, "words": words}}


def test_table_fits_80_columns_with_legend_learners_key_and_next_steps(tmp_path: Path) -> None:
    clips = [DemoClip(f"00003001{i}", "MARK IS GOING TO SEE ELEPHANT", b"", None, f"learner-{i + 1}")
             for i in range(3)]
    ids = {c.name: f"3f1c2a9e-0000-4000-8000-00000000000{i}" for i, c in enumerate(clips)}
    results = {clips[0].name: _scored(8), clips[1].name: _scored(10),
               clips[2].name: {"status": "failed", "error": {"code": "audio_silent", "message": "silent"}}}
    buf = io.StringIO()
    out = Console(file=buf, width=80, color_system=None)
    _print_results(Settings(var_dir=tmp_path), clips, ids, results, "apa_demo_key_123", out=out)
    text = buf.getvalue()
    lines = text.splitlines()
    table = lines[: next(i for i, line in enumerate(lines) if line.startswith("demo LMS key"))]
    assert all(len(line) <= 80 for line in table)
    assert "…" not in text and "..." not in "\n".join(table)  # nothing cut
    for clip in clips:
        assert clip.name in text and clip.learner in text
    assert "8 (7.6)" in text and "10 (9.6)" in text
    assert "value (expected value)" in text and "0-10" in text
    assert "audio_silent" in text
    assert "KEY=apa_demo_key_123" in text
    assert f"/v1/submissions/{ids[clips[0].name]}" in text and "/docs" in text and "learner-1/scores" in text
