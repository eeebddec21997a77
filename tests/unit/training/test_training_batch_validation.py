"""(e) Each kind of malformed annotation batch: rejected under `reject`, quarantined (bad
utterances excluded, the rest usable, status partial) under the default `quarantine`, with the
right code and message per utterance. Local object store; the audio is real speechocean762 speech."""

from __future__ import annotations

import json

import numpy as np
import pytest

from db.models import BatchStatus
from fleet.storage import ObjectStore
from tests.training_support import clip_samples, pick_clips, so_entry, wav_bytes, write_batch
from training_jobs.batches import validate_batch
from training_jobs.config import TrainingDefaults


@pytest.fixture(scope="module")
def clips():
    return pick_clips(3, 3)


@pytest.fixture
def store(tmp_path):
    return ObjectStore(tmp_path / "objects")


def _malformed(clips):
    """(utt_id, entry, audio bytes or None, expected code, words expected in the message)."""
    good = clips[0]
    speech = wav_bytes(clip_samples(good))
    cases = []

    def case(utt, entry, code, needle, audio=speech):
        cases.append((utt, entry, audio, code, needle))

    e = so_entry(good); e["fluency"] = 11
    case("u_sentence_range", e, "score_out_of_range", "fluency = 11")
    e = so_entry(good); e["words"][0]["stress"] = 7
    case("u_stress", e, "score_out_of_range", "stress = 7")
    e = so_entry(good); e["words"][1]["phones-accuracy"][0] = 2.5
    case("u_phone_range", e, "score_out_of_range", "outside 0..2")
    e = so_entry(good); e["words"][0]["accuracy"] = -1
    case("u_word_range", e, "score_out_of_range", "accuracy = -1")
    e = so_entry(good); e["words"][0]["phones-accuracy"].append(2.0)
    case("u_phone_count", e, "phone_count_mismatch", "phone scores for")
    e = so_entry(good); e["words"][0]["text"] = "HELLO"
    case("u_words", e, "words_mismatch", "do not match")
    e = so_entry(good); e["words"][0]["phones"] = ["XX1"] + e["words"][0]["phones"][1:]
    case("u_unknown_phone", e, "unknown_phone", "'XX1'")
    e = so_entry(good); del e["fluency"]
    case("u_missing_field", e, "missing_field", "'fluency'")
    case("u_not_object", ["not", "an", "object"], "bad_item", "JSON object")
    case("u_missing_audio", so_entry(good), "missing_audio", "u_missing_audio.wav", audio=None)
    case("u_garbage_audio", so_entry(good), "audio_undecodable", "cannot be decoded", audio=b"RIFF....not audio at all" * 10)
    case("u_short_audio", so_entry(good), "audio_too_short", "at least", audio=wav_bytes(clip_samples(good)[:1600]))
    case("u_silent_audio", so_entry(good), "audio_silent", "silent", audio=wav_bytes(np.zeros(32000, np.float32)))
    e = so_entry(good, audio="elsewhere/nothing.flac")
    case("u_named_audio_missing", e, "missing_audio", "nothing.flac")
    return cases


def _upload(store, clips, prefix="batches/b1"):
    scores, audio = {}, {}
    for row in clips[1:]:  # two good utterances; one with space-joined phones (speechocean's own form)
        scores[row["utt_id"]] = so_entry(row, phones_as_string=row is clips[1])
        audio[f"audio/{row['utt_id']}.flac"] = (pick_sample_bytes(row))
    expected = {}
    for utt, entry, data, code, needle in _malformed(clips):
        scores[utt] = entry
        if data is not None:
            audio[f"{utt}.wav"] = data
        expected[utt] = (code, needle)
    return write_batch(store, prefix, scores, audio), expected


def pick_sample_bytes(row) -> bytes:
    from tests.conftest import SAMPLE_DIR

    return (SAMPLE_DIR / row["audio"]).read_bytes()


def test_quarantine_excludes_each_bad_utterance_with_its_code(store, clips) -> None:
    prefix, expected = _upload(store, clips)
    v = validate_batch(store, prefix, TrainingDefaults(batch_policy="quarantine"))
    assert v.n_items == len(expected) + 2
    assert sorted(it.annotation.utt_id for it in v.items_ok) == sorted(r["utt_id"] for r in clips[1:])
    by_utt: dict[str, list[dict]] = {}
    for p in v.problems:
        by_utt.setdefault(p["utt_id"], []).append(p)
    assert set(by_utt) == set(expected)
    for utt, (code, needle) in expected.items():
        codes = [p["code"] for p in by_utt[utt]]
        assert codes == [code], (utt, by_utt[utt])
        assert needle in by_utt[utt][0]["message"], (utt, by_utt[utt][0]["message"])
    assert v.status("quarantine") == BatchStatus.partial
    # the audio of good items is found below the prefix (audio/<utt>.flac) and decodes at 16 kHz
    assert all(it.audio_uri.endswith(".flac") for it in v.items_ok)


def test_reject_policy_refuses_the_whole_batch(store, clips) -> None:
    prefix, expected = _upload(store, clips)
    v = validate_batch(store, prefix, TrainingDefaults(batch_policy="reject"))
    assert v.status("reject") == BatchStatus.rejected
    assert {p["utt_id"] for p in v.problems} == set(expected)


def test_clean_batch_is_accepted_and_keeps_audio(store, clips) -> None:
    scores = {r["utt_id"]: so_entry(r) for r in clips}
    audio = {f"{r['utt_id']}.flac": pick_sample_bytes(r) for r in clips}
    prefix = write_batch(store, "batches/clean", scores, audio)
    v = validate_batch(store, prefix, keep_audio=True)
    assert v.problems == [] and v.status("reject") == BatchStatus.accepted
    assert len(v.items_ok) == 3 and all(it.audio.dtype == np.float32 for it in v.items_ok)
    assert [it.annotation.speaker for it in v.items_ok] == [r["speaker"] for r in sorted(clips, key=lambda r: r["utt_id"])]


@pytest.mark.parametrize(
    ("scores", "code"),
    [(None, "missing_scores"), (b"{not json", "bad_json"), (b"[1, 2]", "bad_json"), (b"{}", "empty_batch"),
     (b"\xff\xfe\x00", "bad_json")],
)
def test_batch_level_problems_reject_everything(store, clips, scores, code) -> None:
    prefix = write_batch(store, "batches/broken", scores, {f"{clips[0]['utt_id']}.flac": pick_sample_bytes(clips[0])})
    for policy in ("quarantine", "reject"):
        v = validate_batch(store, prefix, TrainingDefaults(batch_policy=policy))
        assert v.fatal and v.status(policy) == BatchStatus.rejected
        assert [(p["utt_id"], p["code"]) for p in v.problems] == [(None, code)]


def test_sibling_prefix_is_not_part_of_the_batch(store, clips) -> None:
    row = clips[0]
    write_batch(store, "batches/b1", {row["utt_id"]: so_entry(row)}, {})
    write_batch(store, "batches/b10", None, {f"{row['utt_id']}.flac": pick_sample_bytes(row)})
    v = validate_batch(store, "batches/b1")
    assert [p["code"] for p in v.problems] == ["missing_audio"]


def test_scores_json_in_speechocean_original_shape(store, clips) -> None:
    """The original file: phones as strings, float completeness, extra keys such as mispronunciations."""
    row = clips[0]
    entry = so_entry(row, phones_as_string=True, completeness=10.0)
    for w in entry["words"]:
        w["mispronunciations"] = []
    prefix = write_batch(store, "batches/orig", {row["utt_id"]: entry},
                         {f"WAVE/SPEAKER{row['speaker']}/{row['utt_id']}.WAV".replace(".WAV", ".wav"): pick_sample_bytes(row)})
    v = validate_batch(store, prefix)
    assert v.problems == [], json.dumps(v.problems)
