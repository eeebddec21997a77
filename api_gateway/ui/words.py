"""Plain words for the teachers' pages: score bands for colours, failure codes, sparklines.

Colour is never the only signal: every band has a name shown next to the number (legend on the
page), so the pages read the same in greyscale or to a screen reader.
"""

from __future__ import annotations

from collections.abc import Sequence

# Upper bound (inclusive) of each band on the 0..10 scale the API returns. Phones are stored ×5
# from the 0..2 annotation scale: 0 (wrong) is poor, 5 (heavy accent) fair, 10 (right) good.
BANDS: tuple[tuple[str, int, str], ...] = (
    ("poor", 3, "0-3: mostly wrong, practise this"),
    ("fair", 6, "4-6: understandable with errors"),
    ("good", 10, "7-10: correct or nearly so"),
)

FAILURES: dict[str, str] = {
    "audio_silent": "The recording is silent: no speech could be heard.",
    "audio_too_short": "The recording is too short to score.",
    "audio_too_long": "The recording is longer than the service accepts.",
    "audio_undecodable": "The audio file could not be read (damaged or an unsupported format).",
    "object_not_found": "The audio file was not found in storage (moved or deleted before scoring).",
    "object_too_large": "The audio file is larger than the service accepts.",
    "access_denied": "The service was not allowed to read the audio file.",
    "invalid_uri": "The learning platform sent an audio address the service cannot use.",
    "storage_unavailable": "The storage service could not be reached, and retries ran out.",
    "storage_error": "The storage service answered with an error.",
    "attempts_exhausted": "Scoring failed several times in a row and was given up.",
    "dead_lettered": "Scoring failed several times in a row and was set aside for the operators.",
    "result_not_storable": "The scores could not be saved.",
    "bad_granularity": "The learning platform asked for a kind of scoring the service does not offer.",
}


def band(score: float | None) -> str:
    """'poor', 'fair', 'good', or 'none' when there is no score."""
    if score is None:
        return "none"
    for name, upper, _ in BANDS:
        if score <= upper:
            return name
    return "good"


def failure_text(code: str | None) -> str:
    """The failure in plain words; unknown codes say so rather than guess."""
    if not code:
        return "Scoring failed for an unrecorded reason."
    return FAILURES.get(code, f"Scoring failed ({code}).")


def sparkline_points(values: Sequence[int], *, width: int = 100, height: int = 24) -> str:
    """SVG polyline points for totals on 0..10, drawn server-side so the table needs no JS."""
    if not values:
        return ""
    step = width / max(1, len(values) - 1)
    pad = 2
    return " ".join(
        f"{round(i * step, 1)},{round(height - pad - v * (height - 2 * pad) / 10, 1)}" for i, v in enumerate(values)
    )
