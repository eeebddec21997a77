"""Real speechocean762 clips (skipped when the shared data folder is absent).

The corpus's canonical phones come from its own lexicon: close to CMUdict in phones, but with
its own stress digits (0 on most monosyllables) and some non-rhotic entries (FOR = F AO0, HERE =
HH IH AH0). So CMUdict's first pronunciation reproduces the corpus phones word by word once
stress digits are ignored (about 81% of words); exact equality, stress included, is rare. The
measured rates are printed (pytest -s) and guarded below.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pronunciation.audio import load_audio
from pronunciation.errors import UnknownWordError
from pronunciation.lexicon import build_reference
from pronunciation.output_format import build_template
from tests.unit.pronunciation.answer_parser import parse
from pronunciation.schema import Granularity

SAMPLE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speechocean762-sample"

pytestmark = pytest.mark.skipif(not (SAMPLE / "manifest.jsonl").is_file(),
                                reason=f"speechocean762 sample not found at {SAMPLE}")


def manifest() -> list[dict]:
    with open(SAMPLE / "manifest.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def strip_stress(phones: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p.rstrip("012") for p in phones)


def test_real_clips_load() -> None:
    rows = manifest()[:25]
    for row in rows:
        x = load_audio((SAMPLE / row["audio"]).read_bytes())
        assert x.dtype == np.float32 and x.ndim == 1
        assert abs(x.size / 16_000 - row["duration_s"]) < 0.02


def test_build_reference_matches_corpus_phones() -> None:
    rows = manifest()
    utts = unknown = utt_exact = utt_nostress = 0
    words = word_exact = word_nostress = 0
    for row in rows:
        gold = [tuple(w["phones"]) for w in row["words"]]
        # The corpus phones as caller phones always reproduce themselves.
        given = build_reference(row["text"], [list(p) for p in gold])
        assert [w.phones for w in given.words] == gold
        try:
            ref = build_reference(row["text"])
        except UnknownWordError:
            unknown += 1
            continue
        assert [w.text for w in ref.words] == [w["text"] for w in row["words"]]
        got = [w.phones for w in ref.words]
        utts += 1
        utt_exact += got == gold
        utt_nostress += [strip_stress(p) for p in got] == [strip_stress(p) for p in gold]
        for a, b in zip(got, gold, strict=True):
            words += 1
            word_exact += a == b
            word_nostress += strip_stress(a) == strip_stress(b)
    print(f"\nspeechocean762 sample: {len(rows)} utterances, {unknown} with a word not in CMUdict; "
          f"of {utts}: {utt_exact / utts:.1%} exact, {utt_nostress / utts:.1%} equal ignoring stress; "
          f"of {words} words: {word_exact / words:.1%} exact, {word_nostress / words:.1%} ignoring stress")
    assert unknown <= len(rows) * 0.02
    assert word_nostress / words > 0.75


def test_templates_and_parse_on_corpus_references() -> None:
    for row in manifest()[:50]:
        ref = build_reference(row["text"], [w["phones"] for w in row["words"]])
        t = build_template(ref, Granularity.FULL)
        values = {s.name: s.values[-1] for s in t.slots}
        assert parse(t.render(values), ref, Granularity.FULL).sentence.total.value == 10
