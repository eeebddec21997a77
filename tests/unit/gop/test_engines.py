"""One interface, two engines: both turn (audio, reference, granularity) into an Assessment and
name themselves; `load_engine` refuses unknown names; settings pick gop by default."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.settings import Settings
from pronunciation.assess import AssessmentRequest, assess
from pronunciation.engines import Engine, GopEngine, QwenEngine, load_engine
from pronunciation.lexicon import build_reference
from pronunciation.schema import Granularity


def _speechlike(seconds: float) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (x + 0.01 * np.random.RandomState(0).randn(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    from pronunciation.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("m") / "tiny"))


def test_both_engines_answer_the_same_request_through_one_interface(tiny_dir) -> None:
    req = AssessmentRequest(_speechlike(2.0), build_reference("I LIKE TO READ"), Granularity.SENTENCE_WORD)
    engines = [load_engine("gop"), load_engine("qwen2-audio", model_path=tiny_dir, device="cpu")]
    assert [type(e) for e in engines] == [GopEngine, QwenEngine]
    for eng in engines:
        assert isinstance(eng, Engine)
        [r] = eng.assess([req])
        assert r.engine == eng.name and r.model_version == eng.model_version
        assert r.assessment.granularity == Granularity.SENTENCE_WORD
        assert [w.text for w in r.assessment.words] == ["I", "LIKE", "TO", "READ"]
    assert engines[1].model_version == "base"  # no adapter active
    # a bare Qwen2-Audio model still scores through `assess`, as the qwen2-audio engine
    [r] = assess(engines[1].model, [req])
    assert (r.engine, r.model_is_tiny) == ("qwen2-audio", True)


def test_unknown_engine_and_missing_model_path_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        load_engine("whisper")
    with pytest.raises(ValueError, match="model path"):
        load_engine("qwen2-audio")


def test_settings_pick_gop_unless_weights_or_engine_say_otherwise(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("APA_ENGINE", raising=False)
    assert Settings(var_dir=tmp_path).effective_engine == "gop"
    assert not Settings(var_dir=tmp_path).scores_are_tiny
    assert Settings(var_dir=tmp_path, model_path="/models/q").effective_engine == "qwen2-audio"
    tiny = Settings(var_dir=tmp_path, engine="qwen2-audio")
    assert tiny.effective_engine == "qwen2-audio" and tiny.scores_are_tiny
    monkeypatch.setenv("APA_ENGINE", "qwen2-audio")
    assert Settings(var_dir=tmp_path).effective_engine == "qwen2-audio"
