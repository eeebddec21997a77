"""GPU check: the `qwen2-audio` engine path at full Qwen2-Audio-7B-Instruct shape, random weights.

No real weights can be downloaded here, but the cost of serving and training the model depends on
its shape, not on its weights. This script builds a model with Qwen2-Audio-7B-Instruct's shape
(text tower Qwen2-7B: hidden 4096, 32 layers, 32 heads, 32 KV heads, MLP 11008, vocabulary 156,032;
audio tower Whisper-large-v3's encoder: d_model 1280, 32 layers, 20 heads, FFN 5120, 128 mel bins)
DIRECTLY on the GPU in bf16 (constructed under `torch.device("cuda")`, so 8 B parameters are never
initialised on the CPU), with random weights, and measures it through the project's own code:

* tokenizer + processor: the tiny model's byte-level BPE (`pronunciation.tiny_model.train_tokenizer`,
  ~2,000 tokens) in a `Qwen2AudioProcessor` with a 128-bin Whisper feature extractor. The
  tokenizer's vocabulary is smaller than the 156,032-row embedding: every token id is valid, the
  logits still cover all 156,032 rows, so the cost is the real model's; prompts tokenize into
  somewhat more tokens than with Qwen's 151k BPE (stated in the output as prompt lengths);
* inference: `pronunciation.runtime.ScoringModel.score` (template-constrained decoding, expected
  values, shared-prefix KV cache) with two LoRA rank-8 adapters on the LM's linear layers
  (`pronunciation.adapters.new_lora_config`) loaded through `ScoringModel.load_adapter`, on
  speechocean762 sample clips in FULL granularity (sentence + word + phone scores), at batch 1, 8
  and 32: utterances/s, p50/p95 latency, LM forwards per utterance, peak GPU memory, and the time
  to switch (and to load) an adapter;
* training: one LoRA SFT optimizer step and one SimPO+CE optimizer step through
  `training_jobs.sft.sft_loss_fn` / `training_jobs.simpo.simpo_loss_fn` and the project's
  `training_jobs.loop.Trainer` step (AdamW, clipping, grad accumulation 8 = the default), bf16 base.

    # the CPU tiny-model figures (comparison), here:
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --tiny --out benchmarks/results/cpu_tiny.json
    # full size on a GPU:
    python benchmarks/gpu_check.py --device cuda --out results/gpu_full.json --cpu-reference benchmarks/results/cpu_tiny.json

Writes `--out` (JSON) and the same name with `.md` (a markdown summary). THE SCORES MEAN NOTHING
(random weights); only time and memory are of interest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATA_CANDIDATES = (
    Path("/work/shared/data/speechocean762-sample"),
    Path(__file__).resolve().parent / "data_sample",
)

# Qwen/Qwen2-Audio-7B-Instruct's config.json (text_config / audio_config), the values that set the cost.
FULL_TEXT_CONFIG = {
    "model_type": "qwen2",
    "vocab_size": 156032,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 8192,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False,
}
FULL_AUDIO_CONFIG = {
    "model_type": "qwen2_audio_encoder",
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
}
RECORDINGS_PER_HOUR = 1000


def build_config(tokenizer, *, tiny: bool):
    """Qwen2AudioConfig: the tiny test shape, or Qwen2-Audio-7B-Instruct's shape with our tokenizer's special ids."""
    from transformers import Qwen2AudioConfig

    from pronunciation.tiny_model import build_tiny_config

    audio_token_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    eos_ids = [tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_id]
    if tiny:
        return build_tiny_config(len(tokenizer), audio_token_id, pad_id, eos_ids)
    text = dict(FULL_TEXT_CONFIG, pad_token_id=pad_id, eos_token_id=eos_ids, bos_token_id=pad_id)
    config = Qwen2AudioConfig(audio_config=dict(FULL_AUDIO_CONFIG), text_config=text, audio_token_index=audio_token_id)
    config.pad_token_id = pad_id
    config.eos_token_id = eos_ids
    return config


def build_model(config, device, dtype):
    """Random-weight Qwen2AudioForConditionalGeneration constructed on `device` in `dtype` (no CPU init on CUDA)."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = Qwen2AudioForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def load_sample(data: Path, n: int):
    """(manifest records, ScoringInputs, Examples) for the first n clips: the production prompt/template path."""
    from pronunciation.assess import AssessmentRequest, scoring_input
    from pronunciation.audio import load_audio
    from pronunciation.schema import Granularity
    from training_jobs.annotations import check_item
    from training_jobs.dataset import Example

    records = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()][:n]
    scores = json.loads((data / "scores.json").read_text())
    inputs, examples = [], []
    for rec in records:
        audio = load_audio((data / rec["audio"]).read_bytes())
        ann, problems = check_item(rec["utt_id"], scores[rec["utt_id"]])
        if ann is None:
            raise ValueError(f"{rec['utt_id']}: {[p.message for p in problems]}")
        inputs.append(scoring_input(AssessmentRequest(audio=audio, reference=ann.reference, granularity=Granularity.FULL)))
        examples.append(Example(utt_id=rec["utt_id"], batch_id="sample", speaker=ann.speaker, audio=audio, annotation=ann))
    return records, inputs, examples


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


class Meter:
    """Wall time with CUDA sync, and peak GPU memory since `start`."""

    def __init__(self, device) -> None:
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.sync()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def now_gib(self) -> float | None:
        return self.torch.cuda.memory_allocated() / 2**30 if self.cuda else None

    def time(self, fn):
        self.sync()
        t = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t, out


def make_adapters(model, folder: Path, names: list[str]) -> None:
    """Save random LoRA rank-8 adapters (the project's config; B non-zero so they change the output)."""
    from peft import get_peft_model

    from pronunciation.adapters import new_lora_config

    import torch

    for k, name in enumerate(names):
        cfg = new_lora_config(inference_mode=True)
        cfg.init_lora_weights = False  # random A and B: a real, non-zero update
        torch.manual_seed(100 + k)
        peft_model = get_peft_model(model, cfg)
        peft_model.save_pretrained(str(folder / name))
        model = peft_model.unload()  # back to the plain base model (LoRA layers removed)
    return model


def bench_inference(sm, inputs, meter, batches: list[int], n_batch1: int) -> dict:
    """Throughput, latency and LM forwards of ScoringModel.score at each batch size."""
    calls = [0]

    def count(module, args, kwargs, output):
        calls[0] += 1

    hook = sm.base_model.model.language_model.register_forward_hook(count, with_kwargs=True)
    out: dict = {}
    try:
        for b in batches:
            items = inputs[: n_batch1] if b == 1 else inputs
            n = len(items) - len(items) % b if len(items) >= b else len(items)
            items = items[:n]
            sm.score(items[:b], batch_size=b)  # warm-up at this batch size (prefix cache already filled)
            meter.reset_peak()
            calls[0] = 0
            lat: list[float] = []
            t0 = time.perf_counter()
            for s in range(0, len(items), b):
                dt, _ = meter.time(lambda s=s: sm.score(items[s : s + b], batch_size=b))
                lat.extend([dt] * len(items[s : s + b]))  # every item of a batch waits for the whole batch
            total = time.perf_counter() - t0
            out[str(b)] = {
                "utterances": len(items),
                "utt_per_s": len(items) / total,
                "latency_p50_s": pct(lat, 50),
                "latency_p95_s": pct(lat, 95),
                "lm_forwards": calls[0],
                "lm_forwards_per_batch": calls[0] / math.ceil(len(items) / b),
                "peak_gpu_gib": meter.peak_gib(),
            }
            print(f"batch {b}: {out[str(b)]}", flush=True)
    finally:
        hook.remove()
    return out


def compare_audio_embeddings(sm, inputs) -> dict:
    """The audio rows of the LM's input embeddings (encoder + projector output) for each clip alone,
    from the 30 s window and from the trimmed one: relative L2 difference and largest absolute one."""
    import torch

    from pronunciation.prompt_inputs import encode_audio_window

    core = sm.base_model.model  # Qwen2AudioModel
    device = next(core.parameters()).device
    rel, worst = [], []
    with torch.no_grad():
        for x in inputs:
            full, cut = sm.prepare_many([x], trim_window=False)[0], sm.prepare_many([x], trim_window=True)[0]
            assert full.prefix_ids + full.suffix_ids == cut.prefix_ids + cut.suffix_ids
            ids = torch.tensor([full.prefix_ids + full.suffix_ids], device=device)
            slots = ids[0] == core.config.audio_token_id
            a = encode_audio_window(core, ids, full.input_features[None], full.feature_attention_mask[None])[0][slots]
            b = encode_audio_window(core, ids, cut.input_features[None], cut.feature_attention_mask[None])[0][slots]
            a, b = a.float(), b.float()
            rel.append(float((a - b).norm() / a.norm()))
            worst.append(float((a - b).abs().max() / a.abs().max()))
    return {"clips": len(rel), "max_relative_l2": max(rel), "median_relative_l2": statistics.median(rel),
            "max_abs_diff_over_max_abs": max(worst)}


def compare_window(sm, inputs, batch: int) -> dict:
    """The same clips scored with the audio encoder's stock 30 s window and with the window cut to
    each batch's longest clip (`APA_TRIM_AUDIO_WINDOW`): how far the expected values move and how
    many argmax answers change, at this shape and dtype (bf16 on CUDA)."""
    before = sm.trim_audio_window
    try:
        sm.trim_audio_window = False
        full = sm.score(inputs, batch_size=batch)
        sm.trim_audio_window = True
        trimmed = sm.score(inputs, batch_size=batch)
    finally:
        sm.trim_audio_window = before
    diffs = [abs(a.values[k][1] - b.values[k][1]) for a, b in zip(full, trimmed) for k in a.values]
    flips = sum(a.values[k][0] != b.values[k][0] for a, b in zip(full, trimmed) for k in a.values)
    # Random weights can give one-hot answer distributions, where no encoder change would show in
    # the scores: count the expected values that are not whole numbers (a sensitive comparison
    # needs many), and compare the audio embeddings the LM receives directly.
    soft = sum(abs(a.values[k][1] - round(a.values[k][1])) > 1e-3 for a in full for k in a.values)
    out = {"batch": batch, "utterances": len(inputs), "slots": len(diffs), "max_abs_expected_diff": max(diffs),
           "median_abs_expected_diff": statistics.median(diffs), "argmax_changes": flips,
           "non_integer_expected_values": soft, "audio_embeddings": compare_audio_embeddings(sm, inputs[:8])}
    print(f"window 30 s vs trimmed: {out}", flush=True)
    return out


def bench_training(model, processor, examples, device, meter, *, grad_accum: int) -> dict:
    """One SFT and one SimPO optimizer step (after one warm-up step each) through the project's Trainer."""
    from peft import get_peft_model

    from pronunciation.adapters import new_lora_config
    from pronunciation.schema import Granularity
    from training_jobs.loop import Stage, Trainer
    from training_jobs.sft import ExampleEncoder, sft_loss_fn
    from training_jobs.simpo import simpo_loss_fn

    model.config.use_cache = False  # as training_jobs.sft.load_trainable_model
    import torch

    torch.manual_seed(0)
    peft_model = get_peft_model(model, new_lora_config())
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    encoder = ExampleEncoder(processor, Granularity.FULL)
    stages = {
        "sft": Stage(name="sft", n_items=len(examples), epochs=1, lr=1e-4, grad_accum=grad_accum, warmup_ratio=0.1,
                     loss_fn=sft_loss_fn(peft_model, encoder, examples, device)),
        "simpo": Stage(name="simpo", n_items=len(examples), epochs=1, lr=1e-4, grad_accum=grad_accum, warmup_ratio=0.1,
                       loss_fn=simpo_loss_fn(peft_model, encoder, examples, device, beta=0.1, gamma=0.5, lam=0.1, seed=0)),
    }
    out: dict = {"lora_trainable_params": trainable, "grad_accum": grad_accum, "micro_batch": 1}
    with tempfile.TemporaryDirectory() as ckpt:
        for name, stage in stages.items():
            trainer = Trainer(peft_model, [stage], checkpoint_dir=Path(ckpt), seed=0)
            opt, sched = trainer._optimizer(stage)
            warm_s, _ = meter.time(lambda: trainer._step(0, 0, opt, sched))
            meter.reset_peak()
            step_s, loss = meter.time(lambda: trainer._step(0, 1, opt, sched))
            out[name] = {
                "warmup_step_s": warm_s,
                "step_s": step_s,
                "per_example_s": step_s / grad_accum,
                "loss": loss,
                "peak_gpu_gib": meter.peak_gib(),
            }
            print(f"{name}: {out[name]}", flush=True)
    peft_model.eval()
    return out


def gpus_per_1000(utt_per_s: float) -> float:
    """GPUs busy to score 1,000 recordings an hour at this throughput (below 1: a fraction of one)."""
    return RECORDINGS_PER_HOUR / 3600 / utt_per_s


def _gib(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _embedding_line(w: dict) -> str:
    e = w.get("audio_embeddings")
    if not e:
        return ""
    return (f"; the audio embeddings the LM receives ({e['clips']} clips one at a time) differ by a relative L2 of "
            f"{e['median_relative_l2']:.3g} (median; max {e['max_relative_l2']:.3g}), largest element difference "
            f"{e['max_abs_diff_over_max_abs']:.3g} of the largest element")


def markdown(fig: dict) -> str:
    """The figures as a short markdown report (what README quotes)."""
    lines = [f"# gpu_check: {fig['label']}", ""]
    lines.append(f"- device: {fig['device_name']} ({fig['device']}), torch {fig['torch']}, transformers "
                 f"{fig['transformers']}, peft {fig['peft']}, attention {fig['attn_implementation']}")
    lines.append(f"- model: {fig['shape']}, RANDOM weights, {fig['dtype']}; {fig['params_total'] / 1e9:.3f} B parameters "
                 f"(audio tower {fig['params_audio'] / 1e9:.3f} B, LM {fig['params_lm'] / 1e9:.3f} B); built in "
                 f"{fig['build_s']:.1f} s; GPU memory after load {fig['gpu_gib_after_load']} GiB")
    lines.append(f"- tokenizer: the project's tiny byte-level BPE ({fig['tokenizer_vocab']} tokens; embedding rows "
                 f"{fig['embedding_rows']}); prompt tokens median {fig['prompt_tokens_median']} "
                 f"(shared prefix {fig['prefix_tokens']}); score slots/utterance median {fig['slots_median']}")
    lines.append(f"- data: {fig['n_clips']} speechocean762 sample clips, FULL granularity, mean {fig['clip_s_mean']:.2f} s")
    lines.append("")
    lines.append("| batch | utterances | utt/s | p50 latency s | p95 latency s | LM forwards / batch | peak GPU GiB | GPUs per 1,000 rec/h |")
    lines.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b, r in fig["inference"].items():
        peak = f"{r['peak_gpu_gib']:.1f}" if r["peak_gpu_gib"] is not None else "-"
        lines.append(f"| {b} | {r['utterances']} | {r['utt_per_s']:.2f} | {r['latency_p50_s']:.3f} | "
                     f"{r['latency_p95_s']:.3f} | {r['lm_forwards_per_batch']:.1f} | {peak} | "
                     f"{gpus_per_1000(r['utt_per_s']):.3f} |")
    if fig.get("inference_trimmed"):
        w = fig["window"]
        lines.append("")
        lines.append(f"With the encoder window trimmed to each batch's longest clip (`APA_TRIM_AUDIO_WINDOW=true`): "
                     f"over {w['slots']} scores of {w['utterances']} clips at batch {w['batch']}, the largest change "
                     f"in an expected value {w['max_abs_expected_diff']:.3g} (median {w['median_abs_expected_diff']:.3g}), "
                     f"{w['argmax_changes']} argmax answers changed ({w.get('non_integer_expected_values', '?')} of the "
                     f"30 s window's expected values were not whole numbers)" + _embedding_line(w) + "; throughput:")
        lines.append("")
        lines.append("| batch | utt/s, 30 s window | utt/s, trimmed | ratio | p50 latency s, trimmed | peak GPU GiB, trimmed |")
        lines.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for b, r in fig["inference_trimmed"].items():
            base = fig["inference"][b]["utt_per_s"]
            lines.append(f"| {b} | {base:.2f} | {r['utt_per_s']:.2f} | {r['utt_per_s'] / base:.2f}x | "
                         f"{r['latency_p50_s']:.3f} | {_gib(r['peak_gpu_gib'])} |")
    lines.append("")
    a = fig["adapters"]
    lines.append(f"- adapters (LoRA r8, LM linear layers, {a['adapter_mib']:.1f} MiB each): load "
                 f"{a['load_s']:.3f} s; switch (activate) {a['switch_s'] * 1000:.2f} ms; first batch-1 score after a "
                 f"switch {a['first_score_after_switch_s']:.3f} s vs {a['score_same_adapter_s']:.3f} s warm "
                 f"(the shared-prefix KV cache is per adapter)")
    t = fig.get("training")
    if t and "error" not in t:
        lines.append(f"- training (LoRA r8, {t['lora_trainable_params'] / 1e6:.1f} M trainable, micro-batch 1, "
                     f"grad accum {t['grad_accum']}): SFT step {t['sft']['step_s']:.2f} s "
                     f"({t['sft']['per_example_s']:.3f} s/example), peak {_gib(t['sft']['peak_gpu_gib'])} GiB; SimPO step "
                     f"{t['simpo']['step_s']:.2f} s ({t['simpo']['per_example_s']:.3f} s/pair), peak "
                     f"{_gib(t['simpo']['peak_gpu_gib'])} GiB")
    elif t:
        lines.append(f"- training: FAILED: {t['error']}")
    if fig.get("cpu_reference"):
        c = fig["cpu_reference"]
        lines.append("")
        lines.append(f"CPU tiny model, same script (`--device cpu --tiny`, {c['device_name']}): "
                     + ", ".join(f"batch {b} {r['utt_per_s']:.2f} utt/s (p50 {r['latency_p50_s']:.3f} s)"
                                 for b, r in c["inference"].items())
                     + (f"; SFT step {c['training']['sft']['step_s']:.2f} s, SimPO step "
                        f"{c['training']['simpo']['step_s']:.2f} s" if c.get("training") and "sft" in c["training"] else ""))
    lines.append("")
    lines.append("Random weights: the SCORES MEAN NOTHING; time and memory depend on the shape only.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda or cpu")
    ap.add_argument("--tiny", action="store_true", help="the tiny test shape instead of Qwen2-Audio-7B's")
    ap.add_argument("--data", type=Path, help="speechocean762 sample folder (manifest.jsonl, scores.json, audio/)")
    ap.add_argument("--n", type=int, default=64, help="clips for batch 8 and 32")
    ap.add_argument("--n-batch1", type=int, default=16, help="clips for batch 1")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--grad-accum", type=int, default=8)
    ap.add_argument("--no-training", action="store_true")
    ap.add_argument("--trim-window", action="store_true",
                    help="also compare scores with the encoder window trimmed, and time every batch size with it")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on CPU (as the runtime)")
    ap.add_argument("--cpu-reference", type=Path, help="JSON of a CPU --tiny run, quoted in the markdown")
    ap.add_argument("--out", type=Path, required=True, help="JSON output; markdown goes beside it (.md)")
    args = ap.parse_args(argv)

    import torch
    import transformers
    import peft
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    from pronunciation.runtime import ScoringModel
    from pronunciation.tiny_model import train_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data or next((p for p in DEFAULT_DATA_CANDIDATES if (p / "manifest.jsonl").is_file()), None)
    if data is None:
        raise SystemExit("no speechocean762 sample found: pass --data")
    device = torch.device(args.device)
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    meter = Meter(device)
    fig: dict = {
        "label": ("TINY" if args.tiny else "Qwen2-Audio-7B-Instruct shape") + f" on {device.type}",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "shape": "tiny (2-layer d64 audio, 2-layer h64 LM)" if args.tiny else
                 "Qwen2-Audio-7B-Instruct (Qwen2-7B LM 4096x32L, 32 heads, 32 KV heads, MLP 11008, vocab 156032; "
                 "Whisper-large-v3 encoder 1280x32L, 20 heads, FFN 5120, 128 mel)",
    }

    tokenizer = train_tokenizer()
    processor = Qwen2AudioProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, return_attention_mask=True),
        tokenizer=tokenizer,
    )
    config = build_config(tokenizer, tiny=args.tiny)
    build_s, model = meter.time(lambda: build_model(config, device, dtype))
    fig.update(
        build_s=build_s,
        params_total=sum(p.numel() for p in model.parameters()),
        params_audio=sum(p.numel() for n, p in model.named_parameters() if "audio_tower" in n),
        params_lm=sum(p.numel() for n, p in model.named_parameters() if "language_model" in n or "lm_head" in n),
        gpu_gib_after_load=round(meter.now_gib(), 2) if meter.cuda else None,
        tokenizer_vocab=len(tokenizer),
        embedding_rows=model.get_input_embeddings().weight.shape[0],
        attn_implementation=getattr(model.config, "_attn_implementation", None),
    )
    print(f"built {fig['params_total'] / 1e9:.3f} B params in {build_s:.1f} s; GPU {fig['gpu_gib_after_load']} GiB", flush=True)

    n_load = max(args.n, args.n_batch1)
    records, inputs, examples = load_sample(data, n_load)
    sm = ScoringModel(model, processor, model_path="random-weights", model_is_tiny=True, max_batch_size=32)
    prepared = [sm.prepare(x) for x in inputs]
    fig.update(
        n_clips=len(inputs),
        clip_s_mean=statistics.mean(len(x.audio) / 16000 for x in inputs),
        prompt_tokens_median=statistics.median(len(p.ids) for p in prepared),
        prefix_tokens=len(prepared[0].prefix_ids),
        slots_median=statistics.median(len(x.template.slots) for x in inputs),
    )

    # Adapters: two random LoRA r8 adapters saved to disk, loaded through the runtime.
    with tempfile.TemporaryDirectory() as tmp:
        model = make_adapters(model, Path(tmp), ["v1", "v2"])
        sm = ScoringModel(model, processor, model_path="random-weights", model_is_tiny=True, max_batch_size=32)
        adapter_mib = sum(f.stat().st_size for f in (Path(tmp) / "v1").rglob("*") if f.is_file()) / 2**20
        load1, _ = meter.time(lambda: sm.load_adapter(Path(tmp) / "v1", "v1", activate=True))
        load2, _ = meter.time(lambda: sm.load_adapter(Path(tmp) / "v2", "v2"))
    sm.score(inputs[:1], batch_size=1)  # fills v1's prefix cache
    same_s, _ = meter.time(lambda: sm.score(inputs[1:2], batch_size=1))
    switches = []
    for v in ("v2", "v1", "v2", "v1"):
        dt, _ = meter.time(lambda v=v: sm.activate(v))
        switches.append(dt)
    sm.decoder.clear_prefix_cache(all_keys=True)
    sm.activate("v2")
    first_s, _ = meter.time(lambda: sm.score(inputs[1:2], batch_size=1))  # recomputes v2's shared prefix
    sm.activate("v1")
    fig["adapters"] = {
        "adapter_mib": adapter_mib,
        "load_s": load2,
        "first_load_s": load1,
        "switch_s": statistics.median(switches),
        "first_score_after_switch_s": first_s,
        "score_same_adapter_s": same_s,
        "gpu_gib_with_adapters": round(meter.now_gib(), 2) if meter.cuda else None,
    }
    print(f"adapters: {fig['adapters']}", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial.json")  # survives a run cut off at its time limit
    partial.write_text(json.dumps(fig, indent=2, default=str))
    batches = [int(b) for b in args.batches.split(",")]
    fig["inference"] = bench_inference(sm, inputs[: args.n], meter, batches, args.n_batch1)
    partial.write_text(json.dumps(fig, indent=2, default=str))
    if args.trim_window:
        fig["window"] = compare_window(sm, inputs[: args.n], batch=8)
        sm.trim_audio_window = True
        fig["inference_trimmed"] = bench_inference(sm, inputs[: args.n], meter, batches, args.n_batch1)
        sm.trim_audio_window = False
        partial.write_text(json.dumps(fig, indent=2, default=str))
    # answer check: values in range (random weights: the values themselves mean nothing)
    out = sm.score(inputs[:2], batch_size=2)
    fig["example_answer"] = out[0].text.splitlines()[0]

    if not args.no_training:
        # training on the same base: remove the serving adapters first (back to the plain model)
        for v in list(sm.adapter_versions):
            sm.unload_adapter(v)
        sm.decoder.clear_prefix_cache(all_keys=True)
        try:
            fig["training"] = bench_training(sm.base_model, processor, examples[: max(args.grad_accum, 2)], device, meter,
                                             grad_accum=args.grad_accum)
        except Exception as exc:  # report (e.g. out of memory) rather than lose the inference figures
            traceback.print_exc()
            fig["training"] = {"error": f"{type(exc).__name__}: {exc}"}
    if meter.cuda:
        fig["peak_gpu_gib_overall"] = torch.cuda.max_memory_allocated() / 2**30
        fig["gpu_total_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    if args.cpu_reference and args.cpu_reference.is_file():
        fig["cpu_reference"] = json.loads(args.cpu_reference.read_text())
    best = max(fig["inference"].values(), key=lambda r: r["utt_per_s"])
    fig["gpus_per_1000_recordings_per_hour"] = {b: gpus_per_1000(r["utt_per_s"]) for b, r in fig["inference"].items()}
    fig["best_utt_per_s"] = best["utt_per_s"]

    args.out.write_text(json.dumps(fig, indent=2, default=str))
    args.out.with_suffix(".md").write_text(markdown(fig))
    partial.unlink(missing_ok=True)
    print(markdown(fig), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
