"""The answer template: the fixed text of a model answer with numbered holes for scores.

The reference words and phones are known before the model runs, so the whole answer except the
numbers is known too. A template is that answer as a sequence of literal text pieces and score
slots. It is the single contract between the output format (which builds templates and reads
scores back by slot name) and the model runtime (which forces the literals and lets the model
choose only a slot's allowed values). Rendering a template with values gives exactly the text the
parser reads and the training targets use.
"""

from __future__ import annotations

from dataclasses import dataclass

SCORE_VALUES: tuple[int, ...] = tuple(range(11))
STRESS_VALUES: tuple[int, ...] = (5, 10)


@dataclass(frozen=True)
class Literal:
    """Text the model must write verbatim."""

    text: str


@dataclass(frozen=True)
class Slot:
    """A score the model chooses; `name` is unique within a template (e.g. "word[2].stress")."""

    name: str
    values: tuple[int, ...] = SCORE_VALUES


Segment = Literal | Slot


@dataclass(frozen=True)
class Template:
    segments: tuple[Segment, ...]

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(s for s in self.segments if isinstance(s, Slot))

    def render(self, values: dict[str, int]) -> str:
        """Fill every slot with its value; raises KeyError for a missing slot value."""
        parts: list[str] = []
        for seg in self.segments:
            if isinstance(seg, Literal):
                parts.append(seg.text)
            else:
                value = values[seg.name]
                if value not in seg.values:
                    raise ValueError(f"{seg.name}: {value} is not one of {seg.values}")
                parts.append(str(value))
        return "".join(parts)
