"""`apa-fleet score` on the embedded gop engine: bad input refused before any model loads, reference
phones from the command line for words CMUdict does not know."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_DIR, run_cli

CLIP = SAMPLE_DIR / "audio" / "000030012.flac"


def test_text_file_named_wav_is_refused_in_plain_words(cli_env: dict[str, str], tmp_path: Path) -> None:
    fake = tmp_path / "note.wav"
    fake.write_text("not audio")
    proc = run_cli(["score", str(fake), "--text", "HELLO"], cli_env, check=False)
    assert proc.returncode == 1
    assert "audio_undecodable" in proc.stdout and "object at 0x" not in proc.stdout


@pytest.mark.skipif(not CLIP.exists(), reason="the shared speechocean762 sample is not on this machine")
def test_unknown_word_scores_with_phones_from_the_command_line(cli_env: dict[str, str]) -> None:
    refused = run_cli(["score", str(CLIP), "--text", "MARK ISZQ"], cli_env, check=False)
    assert refused.returncode == 1 and "unknown_word" in refused.stdout and "--phones" in refused.stdout
    scored = run_cli(["score", str(CLIP), "--text", "MARK ISZQ", "--phones", "M AA0 R K | IH0 Z",
                      "--granularity", "sentence_word", "--json"], cli_env)
    got = json.loads(scored.stdout[scored.stdout.index("{"):])
    words = got["assessment"]["words"]
    assert [w["text"] for w in words] == ["MARK", "ISZQ"]
    assert 0 <= got["assessment"]["sentence"]["total"]["value"] <= 10
