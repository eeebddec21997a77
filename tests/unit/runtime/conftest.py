"""Fixtures for the model runtime tests: a tiny Qwen2-Audio built once per session, offline.

Templates are built here directly from Literal/Slot (the output-format module is not needed).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from pronunciation.template import SCORE_VALUES, STRESS_VALUES, Literal, Slot, Template  # noqa: E402

WORDS = {
    "MARK": ["M", "AA0", "R", "K"],
    "IS": ["IH0", "Z"],
    "GOING": ["G", "OW0", "IH0", "NG"],
    "TO": ["T", "UW0"],
    "SEE": ["S", "IY0"],
    "ELEPHANT": ["EH1", "L", "IH0", "F", "AH0", "N", "T"],
    "TIME'S": ["T", "AY0", "M", "Z"],
    "CLOTH": ["K", "L", "AO0", "TH"],
}
INSTRUCTIONS = (
    "You are a pronunciation evaluation teacher. Score the audio at sentence, word and phone levels. "
    "All scores range from 0 to 10; stress is 5 or 10."
)


def full_template(words: list[str]) -> Template:
    """Sentence Scores: a f p c t / Word Scores: W/acc/str/tot ... / Phone Scores: P/acc ... - ..."""
    segs: list = [Literal("Sentence Scores: ")]
    for i, aspect in enumerate(("accuracy", "fluency", "prosodic", "completeness", "total")):
        if i:
            segs.append(Literal(" "))
        segs.append(Slot(f"sentence.{aspect}"))
    segs.append(Literal("\nWord Scores:"))
    for w, word in enumerate(words):
        segs += [
            Literal(f" {word}/"),
            Slot(f"word[{w}].accuracy"),
            Literal("/"),
            Slot(f"word[{w}].stress", STRESS_VALUES),
            Literal("/"),
            Slot(f"word[{w}].total"),
        ]
    segs.append(Literal("\nPhone Scores:"))
    for w, word in enumerate(words):
        if w:
            segs.append(Literal(" -"))
        for p, phone in enumerate(WORDS[word]):
            segs += [Literal(f" {phone}/"), Slot(f"word[{w}].phone[{p}]")]
    return Template(tuple(segs))


VALUE_SETS = [SCORE_VALUES, STRESS_VALUES, (0, 1, 2), tuple(range(6)), (3, 7)]
SEPARATORS = [" ", "/", " - ", "\n", ", ", " | "]


def random_template(rng: np.random.Generator, *, value_sets=VALUE_SETS, max_slots: int = 8) -> Template:
    n = int(rng.integers(1, max_slots + 1))
    segs: list = []
    if rng.random() < 0.8:
        segs.append(Literal(str(rng.choice(["Sentence Scores: ", "Scores: ", "A: ", "Word Scores: MARK/"]))))
    words = list(WORDS)
    for i in range(n):
        if i:
            segs.append(Literal(str(rng.choice(SEPARATORS))))
            if rng.random() < 0.4:  # adjacent literals, as the output format writes them
                segs.append(Literal(f"{rng.choice(words)}/"))
        segs.append(Slot(f"s{i}", tuple(value_sets[int(rng.integers(len(value_sets)))])))
    if rng.random() < 0.5:
        segs.append(Literal(str(rng.choice([".", "\n", " end"]))))
    return Template(tuple(segs))


def make_audio(rng: np.random.Generator, seconds: float | None = None) -> np.ndarray:
    seconds = float(rng.uniform(0.3, 4.0)) if seconds is None else seconds
    t = np.arange(int(16000 * seconds)) / 16000
    kind = rng.integers(3)
    if kind == 0:
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t)
    elif kind == 1:
        x = 0.1 * rng.standard_normal(t.size)
    else:
        x = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def random_request(rng: np.random.Generator) -> str:
    words = list(rng.choice(list(WORDS), size=int(rng.integers(1, 5))))
    return f"Reference text: {' '.join(words)}.\nReference phone sequence: " + " - ".join(" ".join(WORDS[w]) for w in words) + "."


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny model gains nothing from threads, and on a small shared machine torch's spinning
    worker threads slow these tests down many times over when other processes compete for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    from pronunciation.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2-audio-tiny", seed=0)


@pytest.fixture(scope="session")
def processor(tiny_model_path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_path)


@pytest.fixture(scope="session")
def tiny_config(tiny_model_path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(tiny_model_path)


@pytest.fixture(scope="session")
def random_model(tiny_config):
    """Factory: a fresh in-memory tiny Qwen2-Audio with random weights from `seed` (same tokenizer)."""
    from transformers import Qwen2AudioForConditionalGeneration

    def make(seed: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen2AudioForConditionalGeneration(tiny_config)
        return model.eval()

    return make


@pytest.fixture
def load_scoring_model(tiny_model_path):
    from pronunciation.runtime import ScoringModel

    def load(**kwargs):
        return ScoringModel.load(tiny_model_path, device="cpu", **kwargs)

    return load


@pytest.fixture(scope="session")
def h():
    """Helpers for building templates, audio and requests."""
    return SimpleNamespace(
        full_template=full_template,
        random_template=random_template,
        make_audio=make_audio,
        random_request=random_request,
        WORDS=WORDS,
        INSTRUCTIONS=INSTRUCTIONS,
        VALUE_SETS=VALUE_SETS,
    )
