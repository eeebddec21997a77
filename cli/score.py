"""`apa-fleet score AUDIO --text ...`: score one recording locally, no queue or database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.context import settings

console = Console()


def _fmt(score) -> str:
    return "-" if score is None else f"{score.value} ({score.expected:.2f})"


def ensure_engine_name(name: str) -> str:
    """`name` if it is an engine, else exit with status 2 and the choices."""
    from pronunciation.engines import ENGINES

    if name not in ENGINES:
        console.print(f"[red]error:[/red] unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
        raise typer.Exit(2)
    return name


def score(
    audio: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="WAV, FLAC, OGG or MP3 file.")],
    text: Annotated[str, typer.Option(help="The reference text the learner read.")],
    granularity: Annotated[str, typer.Option(help="full, sentence_word, sentence, word_accuracy, sentence_accuracy, "
                                                  "sentence_fluency, sentence_prosody, sentence_total")] = "full",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    adapter: Annotated[Path | None, typer.Option(help="A LoRA adapter folder to score with (qwen2-audio).")] = None,
    engine: Annotated[str | None, typer.Option(help="gop or qwen2-audio; default: APA_ENGINE (gop).")] = None,
    phones: Annotated[str | None, typer.Option(
        help="Reference phones, words separated by ' | ', e.g. \"M AA1 R K | IH1 Z\" (needed for words "
             "CMUdict does not know).")] = None,
) -> None:
    """Score one recording and print a table (value and expected value per score) or JSON."""
    from pronunciation.assess import AssessmentRequest
    from pronunciation.engines import load_engine
    from pronunciation.audio import load_audio
    from pronunciation.errors import PronunciationInputError
    from pronunciation.lexicon import build_reference
    from pronunciation.schema import Granularity

    cfg = settings()
    name = ensure_engine_name(engine or cfg.effective_engine)
    try:
        mode = Granularity(granularity)
    except ValueError:
        console.print(f"[red]error:[/red] unknown granularity {granularity!r}")
        raise typer.Exit(2) from None
    try:
        given = [w.split() for w in phones.split("|")] if phones is not None else None
        reference = build_reference(text, given, max_words=cfg.max_reference_words)
        samples = load_audio(audio.read_bytes(), max_seconds=cfg.max_audio_seconds, min_seconds=cfg.min_audio_seconds)
    except PronunciationInputError as exc:
        hint = " (pass them with --phones)" if exc.code == "unknown_word" and phones is None else ""
        console.print(f"[red]error ({exc.code}):[/red] {exc.message}{hint}")
        raise typer.Exit(1) from None
    eng = load_engine(name, model_path=cfg.effective_model_path, device=cfg.device, head_dir=cfg.gop_head_dir or None,
                      tiny=cfg.uses_tiny_model)
    if adapter is not None:
        if not hasattr(eng, "model"):
            console.print(f"[red]error:[/red] --adapter needs the qwen2-audio engine, not {name}")
            raise typer.Exit(2)
        eng.model.load_adapter(str(adapter), adapter.name, activate=True)
    result = eng.assess([AssessmentRequest(samples, reference, mode)])[0]
    if as_json:
        print(json.dumps({
            "assessment": result.assessment.model_dump(mode="json"), "raw_text": result.raw_text,
            "adapter_version": result.adapter_version, "model_is_tiny": result.model_is_tiny,
            "engine": result.engine, "model_version": result.model_version,
        }, indent=2))
        return
    if result.model_is_tiny:
        console.print("[yellow]tiny random model: these scores mean nothing[/yellow]")
    a = result.assessment
    if a.sentence is not None:
        t = Table("accuracy", "fluency", "prosody", "completeness", "total", title="sentence (value (expected))")
        t.add_row(*(_fmt(getattr(a.sentence, k)) for k in ("accuracy", "fluency", "prosody", "completeness", "total")))
        console.print(t)
    if a.words:
        t = Table("word", "accuracy", "stress", "total", "phones", title="words")
        for w in a.words:
            t.add_row(w.text, _fmt(w.accuracy), _fmt(w.stress), _fmt(w.total),
                      " ".join(f"{p.phone}:{p.accuracy.value}" for p in w.phones) or "-")
        console.print(t)
    console.print(f"engine: {result.engine} {result.model_version}")
