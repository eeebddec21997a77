"""Reads answer text back into an Assessment: the test-side check that rendered text, training
targets and the constrained decoder agree on one format (production never parses model text: the
decoder fills the template's slots directly)."""

from __future__ import annotations

import re
from typing import NoReturn

from pronunciation.errors import OutputFormatError
from pronunciation.lexicon import Reference
from pronunciation.output_format import _layout, assessment_from_slots
from pronunciation.schema import Assessment, Granularity
from pronunciation.template import Literal

_DIGITS = re.compile(r"[0-9]+")


def parse(text: str, reference: Reference, granularity: Granularity) -> Assessment:
    """Read answer text back into an Assessment (expected = argmax: text has no distribution).

    The text must match the template exactly, except for leading and trailing whitespace.
    Raises OutputFormatError (code malformed_output) saying where (line, column), what part
    of the answer (which word, phone or score) and what was expected versus found.
    """
    granularity = Granularity(granularity)
    layout = _layout(reference, granularity)
    pos = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    values: dict[str, tuple[int, float]] = {}
    for seg, ctx in zip(layout.template.segments, layout.contexts, strict=True):
        if isinstance(seg, Literal):
            assert isinstance(ctx, tuple)
            lit = seg.text
            if text.startswith(lit, pos) and pos + len(lit) <= end:
                pos += len(lit)
                continue
            k = 0
            while k < len(lit) and pos + k < end and text[pos + k] == lit[k]:
                k += 1
            where = [c for off, c in ctx if off <= k][-1]
            _fail(text, pos + k, where, repr(lit), _found(text, pos, end, len(lit) + 6))
        else:
            assert isinstance(ctx, str)
            m = _DIGITS.match(text, pos, end)
            allowed = _describe_values(seg.values)
            if m is None:
                _fail(text, pos, ctx, f"a score {allowed}", _found(text, pos, end, 6))
            digits = m.group(0)
            value = int(digits) if len(digits) <= 3 else None
            if value is None or str(value) != digits or value not in seg.values:
                _fail(text, pos, ctx, f"a score {allowed}", repr(digits))
            values[seg.name] = (value, float(value))
            pos = m.end()
    if pos != end:
        _fail(text, pos, "after the last score", "end of text", _found(text, pos, end, 20))
    return assessment_from_slots(reference, granularity, values)


def _describe_values(values: tuple[int, ...]) -> str:
    if len(values) > 2 and values == tuple(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return " or ".join(str(v) for v in values)


def _found(text: str, pos: int, end: int, width: int) -> str:
    if pos >= end:
        return "end of text"
    snippet = text[pos : min(end, pos + width)]
    return repr(snippet) + ("..." if pos + width < end else "")


def _fail(text: str, at: int, context: str, expected: str, found: str) -> NoReturn:
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    raise OutputFormatError(
        f"line {line}, column {column} ({context}): expected {expected}, found {found}",
        line=line,
        column=column,
        context=context,
        expected=expected,
        found=found,
    )


