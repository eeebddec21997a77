"""Build a TINY Qwen2-Audio offline: same architecture and file layout as the real weights, random values.

Nothing can be downloaded on these machines, so tests, benchmarks and the embedded demo use a
miniature `Qwen2AudioForConditionalGeneration` (2-layer d_model 64 audio encoder, 2-layer hidden 64
Qwen2 text model, ~0.5 M parameters) with a byte-level BPE tokenizer trained here on a few KB of
local text. It is saved with `save_pretrained` and loaded back through exactly the code path used
for `Qwen/Qwen2-Audio-7B-Instruct`.

ITS SCORES MEAN NOTHING. A marker file (`apa_fleet_tiny.json`) in the model folder tells the
runtime so, and the runtime says so in its log and in every output (`model_is_tiny`).

The tokenizer reproduces what matters of Qwen2's: the same pre-tokenization regex (digits are split
one by one, so "10" is the two tokens "1" "0"), byte-level BPE, NFC normalisation, and the special
tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<|audio_bos|>`, `<|AUDIO|>`, `<|audio_eos|>`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

TINY_MARKER = "apa_fleet_tiny.json"
TINY_FORMAT_VERSION = 1

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_bos|>",
    "<|AUDIO|>",
    "<|audio_eos|>",
)

# Qwen2's pre-tokenizer (transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

TINY_VOCAB_SIZE = 2000

log = logging.getLogger(__name__)

_ARPABET = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()
_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}

_WORDS = """
the of and to a in is it you that he was for on are with as I his they be at one have this from or had by
hot word but what some we can out other were all there when up use your how said an each she which do
their time if will way about many then them write would like so these her long make thing see him two has
look more day could go come did number sound no most people my over know water than call first who may
down side been now find any new work part take get place made live where after back little only round man
year came show every good me give our under name very through just form sentence great think say help low
line differ turn cause much mean before move right boy old too same tell does set three want air well also
play small end put home read hand port large spell add even land here must big high such follow act why ask
men change went light kind off need house picture try us again animal point mother world near build self
earth father head stand own page should country found answer school grow study still learn plant cover food
sun four between state keep eye never last let thought city tree cross farm hard start might story saw far
sea draw left late run while press close night real life few north open seem together next white children
begin got walk example ease paper group always music those both mark often letter until mile river car feet
care second book carry took science eat room friend began idea fish mountain stop once base hear horse cut
sure watch color face wood main enough plain girl usual young ready above ever red list though feel talk
bird soon body dog family direct pose leave song measure door product black short numeral class wind
question happen complete ship area half rock order fire south problem piece told knew pass since top whole
king space heard best hour better true during hundred five remember step early hold west ground interest
reach fast verb sing listen six table travel less morning ten simple several vowel toward war lay against
pattern slow center love person money serve appear road map rain rule govern pull cold notice voice unit
power town fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest
correct able pound done beauty drive stood contain front teach week final gave green oh quick develop ocean
warm free minute strong special mind behind clear tail produce fact street inch multiply nothing course stay
wheel full force blue object decide surface deep moon island foot system busy test record boat common gold
possible plane stead dry wonder laugh thousand ago ran check game shape equate miss brought heat snow tire
bring yes distant fill east paint language among elephant going cloth shirt zero eight seven nine
user system assistant helpful request instructions reference phone phones score scores audio
"""

_TEMPLATE_TEXT = """
You are a helpful assistant. You are a pronunciation evaluation teacher who analyzes speech at sentence,
word and phone levels. At the sentence level, the evaluation includes accuracy, fluency, prosody,
completeness, and a total score. Accuracy reflects phone-level pronunciation, accent, and clarity; fluency
considers pauses, repetitions, and stammering; prosody assesses intonation, speed, and rhythm; and
completeness indicates the percentage of words from the target text that were actually pronounced
correctly. The total score is a comprehensive measure that reflects all aspects of speech. At the word
level, the evaluation includes accuracy, stress, and a total score. The stress score reflects the
correctness of stress placement, where a score of 10 indicates correct stress and 5 indicates incorrect
stress. At phone level, we assess the goodness of each phoneme within the words. All scores range from 0
to 10, with 0 representing the poorest pronunciation and 10 representing the best.
Please evaluate the provided audio at the sentence, word, and phone levels using the given reference text
and phone sequence.
Reference text: MARK IS GOING TO SEE ELEPHANT.
Reference phone sequence: M AA0 R K - IH0 Z - G OW0 IH0 NG - T UW0 - S IY0 - EH1 L IH0 F AH0 N T.
In the phone sequence, '-' indicates word boundaries. The final output format should be structured as follows:
Sentence Scores: {Acc} {Flu} {Pro} {Com} {Tot}
Word Scores: {W1}/{Acc}/{Str}/{Tot} {W2}/{Acc}/{Str}/{Tot} ...
Phone Scores: {P1}/{Acc} {P2}/{Acc} - {P3}/{Acc} ...
Sentence Scores: 8 9 7 10 8
Word Scores: MARK/9/10/9 IS/10/10/10 GOING/8/5/7 TO/10/10/10 SEE/7/10/8 ELEPHANT/6/10/6
Phone Scores: M/10 AA0/8 R/9 K/10 - IH0/10 Z/9 - G/8 OW0/6 IH0/7 NG/10 - T/10 UW0/10
"""


def training_corpus() -> list[str]:
    """A few KB of deterministic local text: English words (both cases), ARPAbet phones, digits, prompts."""
    words = _WORDS.split()
    lines: list[str] = []
    for i in range(0, len(words), 12):
        chunk = words[i : i + 12]
        lines.append(" ".join(chunk))
        lines.append(" ".join(w.upper() for w in chunk))
        lines.append(" ".join(w.capitalize() for w in chunk) + ".")
    phones = []
    for p in _ARPABET:
        phones.extend([p, p + "0", p + "1", p + "2"] if p in _VOWELS else [p])
    lines.append(" ".join(phones))
    lines.append(" - ".join(phones))
    lines.append("/".join(phones))
    for i in range(0, 200, 7):
        lines.append(" ".join(str((i * j) % 11) for j in range(1, 15)))
        lines.append("/".join(str((i + j) % 11) for j in range(1, 9)))
    lines.extend(_TEMPLATE_TEXT.strip().splitlines())
    return lines


def train_tokenizer(vocab_size: int = TINY_VOCAB_SIZE):
    """Train a Qwen2-style byte-level BPE on `training_corpus()` and wrap it as `Qwen2Tokenizer`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    bpe.train_from_iterator(training_corpus(), trainer=trainer)
    state = json.loads(bpe.to_str())
    vocab: dict[str, int] = dict(state["model"]["vocab"])
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    for tok in SPECIAL_TOKENS:  # special tokens after the BPE vocabulary, as in Qwen's tokenizer
        vocab[tok] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=32768,
    )
    for tok in SPECIAL_TOKENS:
        ids = tokenizer.encode(tok, add_special_tokens=False)
        if len(ids) != 1:  # pragma: no cover - guards a tokenizers/transformers behaviour change
            raise RuntimeError(f"special token {tok!r} does not encode as one token: {ids}")
    return tokenizer


def build_tiny_config(vocab_size: int, audio_token_id: int, pad_token_id: int, eos_token_ids: list[int]):
    from transformers import Qwen2AudioConfig

    audio_config = {
        "model_type": "qwen2_audio_encoder",
        "d_model": 64,
        "encoder_layers": 2,
        "encoder_attention_heads": 4,
        "encoder_ffn_dim": 128,
        "num_mel_bins": 128,
        "max_source_positions": 1500,
        "initializer_range": 0.1,
    }
    text_config = {
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "initializer_range": 0.1,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_ids,
        "bos_token_id": pad_token_id,
    }
    config = Qwen2AudioConfig(audio_config=audio_config, text_config=text_config, audio_token_index=audio_token_id)
    config.pad_token_id = pad_token_id
    config.eos_token_id = eos_token_ids
    return config


def is_tiny_model(path: str | os.PathLike) -> bool:
    return (Path(path) / TINY_MARKER).is_file()


def ensure_model_files(path: str, *, tiny: bool) -> str:
    """The model path, ready to load: the embedded mode builds the tiny model on first use (workers,
    training and the CLI all go through here, so they build it the same way)."""
    if tiny and not (Path(path) / "config.json").exists():
        log.warning("building the tiny Qwen2-Audio at %s (random weights: its scores mean nothing)", path)
        build_tiny_model(path)
    return path


def build_tiny_model(path: str | os.PathLike, seed: int = 0) -> Path:
    """Build (once) a tiny random Qwen2-Audio + processor at `path` and return the path.

    Idempotent: if `path` already holds a tiny model built with the same seed and format, nothing is
    done. The folder is written atomically (temp folder, then rename) so a crash leaves no half model.
    """
    path = Path(path)
    marker = path / TINY_MARKER
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("seed") == seed and info.get("format") == TINY_FORMAT_VERSION:
            return path
        raise FileExistsError(f"{path} holds a tiny model with different settings ({info}); use another path")
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists, is not empty and is not a tiny model folder")

    import torch
    from transformers import (
        GenerationConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = train_tokenizer()
    audio_token_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    eos_ids = [tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_id]
    config = build_tiny_config(len(tokenizer), audio_token_id, pad_id, eos_ids)

    # Seeded, and independent of the global RNG state of the caller.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        pad_token_id=pad_id, eos_token_id=eos_ids, bos_token_id=pad_id, do_sample=False
    )
    model.eval()

    feature_extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, return_attention_mask=True)
    processor = Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        n_params = sum(p.numel() for p in model.parameters())
        (tmp / TINY_MARKER).write_text(
            json.dumps(
                {
                    "format": TINY_FORMAT_VERSION,
                    "seed": seed,
                    "parameters": n_params,
                    "warning": "Tiny random Qwen2-Audio for tests and demos. Its scores mean nothing.",
                },
                indent=2,
            )
        )
        if path.exists():
            path.rmdir()  # empty (checked above)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built tiny Qwen2-Audio (%d parameters, seed %d) at %s", n_params, seed, path)
    return path


if __name__ == "__main__":  # pragma: no cover
    import sys

    logging.basicConfig(level=logging.INFO)
    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-qwen2-audio"))
