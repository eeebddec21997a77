"""Benchmark: template-constrained decoding vs free greedy generation, batch 8 vs batch 1.

    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/bench_decoding.py --n 40
    python benchmarks/bench_decoding.py --model /models/Qwen2-Audio-7B-Instruct --n 40   # real weights, GPU

On speechocean762-sample utterances, with the prompt and full-granularity answer template the workers build from the
manifest's words and phones (sentence: 5 scores, word: accuracy/stress/total, phone: one score per
phone). Prints medians per utterance of language-model forward calls (counted with a forward hook
on the language model) and wall time for

  * constrained decoding (one forward per score slot, shared prefix KV cached),
  * constrained decoding without the prefix cache,
  * free `generate` (greedy) of the same number of output tokens as the constrained answer,

then throughput (utterances/s) of constrained decoding at batch 8 vs batch 1, and peak RSS.
With the default tiny random model the SCORES MEAN NOTHING; only the costs are of interest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from pronunciation.assess import AssessmentRequest  # noqa: E402
from pronunciation.assess import scoring_input as scoring_input_for  # noqa: E402
from pronunciation.audio import load_audio  # noqa: E402
from pronunciation.lexicon import build_reference  # noqa: E402
from pronunciation.schema import Granularity  # noqa: E402

DEFAULT_DATA = Path("/work/shared/data/speechocean762-sample")

def scoring_input(rec: dict, audio: np.ndarray):
    """The production path: the reference, prompt and full-granularity template the workers build."""
    reference = build_reference(rec["text"], [w["phones"] for w in rec["words"]])
    return scoring_input_for(AssessmentRequest(audio=audio, reference=reference, granularity=Granularity.FULL))


def load_clip(path: Path) -> np.ndarray:
    return load_audio(path.read_bytes())


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (default: build the tiny random model)")
    ap.add_argument("--tiny-dir", default=os.environ.get("APA_TINY_MODEL", str(Path.home() / ".cache/apa-fleet/tiny-qwen2-audio")))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--n", type=int, default=40, help="utterances")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--repeat", type=int, default=2, help="throughput runs (best of)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--only-throughput", action="store_true", help="skip the per-utterance comparison")
    ap.add_argument("--trim-window", action="store_true",
                    help="score with the audio window cut to the longest clip of each call (default: 30 s)")
    ap.add_argument("--compare-window", action="store_true",
                    help="score every utterance with the 30 s and the trimmed window and report the differences")
    args = ap.parse_args(argv)
    console = Console()

    import torch

    from pronunciation.compiled_template import compile_template
    from pronunciation.runtime import ScoringModel
    from pronunciation.tiny_model import build_tiny_model

    if args.threads:
        torch.set_num_threads(args.threads)
    rss_start = peak_rss_mib()
    model_path = args.model or str(build_tiny_model(args.tiny_dir))
    t0 = time.perf_counter()
    sm = ScoringModel.load(model_path, device=args.device, **({"trim_audio_window": True} if args.trim_window else {}))
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_mib()
    if sm.model_is_tiny:
        console.print("[bold yellow]Tiny random model: the scores mean nothing; costs only.[/]")

    records = [json.loads(line) for line in (args.data / "manifest.jsonl").read_text().splitlines() if line.strip()]
    records = records[: args.n]
    inputs = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("loading audio", total=len(records))
        for rec in records:
            audio = load_clip(args.data / rec["audio"])
            inputs.append(scoring_input(rec, audio))
            progress.advance(task)

    calls = [0]
    fed = [0]  # token positions fed to the language model (batch x width, padding included)

    def count(module, args, kwargs, output):
        calls[0] += 1
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids")
        fed[0] += int(x.shape[0] * x.shape[1]) if x is not None else 0

    lm = sm.base_model.model.language_model  # counts LM forwards, with or without adapters
    lm.register_forward_hook(count, with_kwargs=True)

    def sync():
        if sm.device.type == "cuda":
            torch.cuda.synchronize()

    prepared = [sm.prepare(x) for x in inputs]
    tok = sm.processor.tokenizer
    n_slots = [len(x.template.slots) for x in inputs]
    prefix_len = [len(p.prefix_ids) for p in prepared]
    suffix_len = [len(p.suffix_ids) for p in prepared]

    sm.score(inputs[:1])  # warm-up; fills the shared-prefix KV cache
    sync()

    def timed(fn, x):
        calls[0] = fed[0] = 0
        sync()
        t = time.perf_counter()
        out = fn(x)
        sync()
        return (calls[0], fed[0]), time.perf_counter() - t, out

    def constrained(x):
        return sm.score([x], batch_size=1)[0]

    def constrained_no_prefix_cache(x):
        sm.decoder.use_prefix_cache = False
        try:
            return sm.score([x], batch_size=1)[0]
        finally:
            sm.decoder.use_prefix_cache = True

    # The three methods run back to back on each utterance (order rotating), so that load from
    # other processes on the machine hits them alike.
    methods = ["constrained", "no_prefix_cache", "free"]
    stats = {m: ([], [], []) for m in methods}
    answer_tokens: list[int] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("per utterance: constrained / no prefix cache / free generate", total=len(inputs))
        for k, x in enumerate([] if args.only_throughput else inputs):
            _, _, first = timed(constrained, x)  # its answer length is the free-generate budget
            n_tokens = len(compile_template(tok, x.template).answer_ids({n: v for n, (v, _) in first.values.items()}))
            fns = {
                "constrained": constrained,
                "no_prefix_cache": constrained_no_prefix_cache,
                "free": lambda x, n=n_tokens: sm.free_generate([x], max_new_tokens=n),
            }
            for m in methods[k % 3 :] + methods[: k % 3]:
                fw, dt, out = timed(fns[m], x)
                stats[m][0].append(fw)
                stats[m][1].append(dt)
                stats[m][2].append(out)
            answer_tokens.append(n_tokens)
            progress.advance(task)
    if args.only_throughput:  # placeholders so the report code below stays one path
        for m in methods:
            stats[m] = ([(0, 0)], [0.0], [None])
        answer_tokens = [0]
    window_cmp = None
    if args.compare_window:
        full = sm.score(inputs, batch_size=args.batch) if not sm.trim_audio_window else None
        sm.trim_audio_window = not sm.trim_audio_window
        other = sm.score(inputs, batch_size=args.batch)
        sm.trim_audio_window = not sm.trim_audio_window
        full, trimmed = (full, other) if full is not None else (other, sm.score(inputs, batch_size=args.batch))
        diffs = [abs(a.values[k][1] - b.values[k][1]) for a, b in zip(full, trimmed) for k in a.values]
        flips = sum(a.values[k][0] != b.values[k][0] for a, b in zip(full, trimmed) for k in a.values)
        window_cmp = {"slots": len(diffs), "max_abs_expected_diff": max(diffs), "argmax_changes": flips}
        console.print(f"30 s vs trimmed window over {len(diffs)} scores: max |expected difference| "
                      f"{max(diffs):.2e}, argmax changes {flips}")
    c_fw, c_t, c_out = stats["constrained"]
    n_fw, n_t, _ = stats["no_prefix_cache"]
    f_fw, f_t, f_out = stats["free"]
    c_fed, n_fed, f_fed = ([f for _, f in fw] for fw in (c_fw, n_fw, f_fw))
    c_fw, n_fw, f_fw = ([c for c, _ in fw] for fw in (c_fw, n_fw, f_fw))

    cpu_tp: dict[int, float] = {}

    def throughput(batch):
        """Utterances/s by wall time (returned) and by this process's CPU time (kept in cpu_tp):
        on a shared CPU machine other processes stretch the wall time, not the CPU time a run uses
        (with --threads 1 the CPU time is the work done)."""
        sync()
        t, c = time.perf_counter(), time.process_time()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"constrained, batch {batch}", total=len(inputs))
            for s in range(0, len(inputs), batch):
                sm.score(inputs[s : s + batch], batch_size=batch)
                progress.advance(task, min(batch, len(inputs) - s))
        sync()
        cpu_tp[batch] = max(cpu_tp.get(batch, 0.0), len(inputs) / (time.process_time() - c))
        return len(inputs) / (time.perf_counter() - t)

    tp1, tpb, fw_batch = 0.0, 0.0, 0
    for _ in range(args.repeat):  # best of `repeat`, alternating, against noise from other processes
        tp1 = max(tp1, throughput(1))
        calls[0] = 0
        tpb = max(tpb, throughput(args.batch))
        fw_batch = calls[0]
    rss_end = peak_rss_mib()

    med = statistics.median
    table = Table(title=f"{len(inputs)} utterances, {'TINY random' if sm.model_is_tiny else 'real'} model on {sm.device}")
    table.add_column("per utterance (median)")
    table.add_column("LM forwards", justify="right")
    table.add_column("wall ms", justify="right")
    table.add_column("LM tokens fed", justify="right")
    table.add_column("output tokens", justify="right")
    for label, fw, fd, t in (
        ("constrained decoding", c_fw, c_fed, c_t),
        ("constrained, no prefix cache", n_fw, n_fed, n_t),
        ("free generate (greedy)", f_fw, f_fed, f_t),
    ):
        table.add_row(label, f"{med(fw):.0f}", f"{1000 * med(t):.1f}", f"{med(fd):.0f}", f"{med(answer_tokens):.0f}")
    if not args.only_throughput:
        console.print(table)
        console.print(
            f"speed-up vs free generate: {med(f_t) / med(c_t):.1f}x wall, {med(f_fw) / med(c_fw):.1f}x fewer forwards"
        )
    console.print(
        f"score slots/utt: median {med(n_slots):.0f}; prompt tokens: shared prefix {med(prefix_len):.0f} + "
        f"per-request {med(suffix_len):.0f} (audio included)"
    )
    console.print(
        f"throughput, constrained: batch 1 {tp1:.1f} utt/s, batch {args.batch} {tpb:.1f} utt/s "
        f"({tpb / tp1:.2f}x; {fw_batch} forwards for {len(inputs)} utterances at batch {args.batch})"
    )
    if sm.device.type == "cpu":
        c1, cb = cpu_tp[1], cpu_tp[args.batch]
        console.print(f"throughput by CPU time: batch 1 {c1:.1f} utt/s, batch {args.batch} {cb:.1f} utt/s ({cb / c1:.2f}x)")
    console.print(
        f"peak RSS: {rss_end:.0f} MiB (after imports {rss_start:.0f} MiB, after model load {rss_loaded:.0f} MiB); "
        f"model load {load_s:.2f} s"
    )
    if sm.device.type == "cuda":
        console.print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    if not args.only_throughput:
        console.print(f"example constrained answer: {c_out[0].text.splitlines()[0]} ...")
        console.print(f"example free answer:        {f_out[0][0][:60]!r} ...")

    figures = {
        "n": len(inputs),
        "device": str(sm.device),
        "model_is_tiny": sm.model_is_tiny,
        "median_slots": med(n_slots),
        "median_answer_tokens": med(answer_tokens),
        "constrained": {"forwards": med(c_fw), "ms": 1000 * med(c_t), "tokens_fed": med(c_fed)},
        "constrained_no_prefix_cache": {"forwards": med(n_fw), "ms": 1000 * med(n_t), "tokens_fed": med(n_fed)},
        "free_generate": {"forwards": med(f_fw), "ms": 1000 * med(f_t), "tokens_fed": med(f_fed)},
        "throughput_utt_s": {"batch_1": tp1, f"batch_{args.batch}": tpb},
        "throughput_ratio": tpb / tp1,
        "cpu_time_throughput_utt_s": {f"batch_{b}": v for b, v in cpu_tp.items()},
        "forwards_at_batch": fw_batch,
        "trim_window": bool(getattr(sm, "trim_audio_window", False)),
        "window_comparison": window_cmp,
        "threads": torch.get_num_threads(),
        "peak_rss_mib": rss_end,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
