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


class SlotName(str):
    """A score slot's name ("sentence.fluency", "word[2].stress", "word[0].phone[1].accuracy") that
    also carries what it scores, so no caller parses the text back: `level` (sentence, word or
    phone), `aspect`, `word` and `phone` (0-based indexes, None where they do not apply).

    It stays a str, so it keys value dicts and prints as before; build it with the constructors."""

    level: str
    aspect: str
    word: int | None
    phone: int | None

    def __new__(cls, text: str, level: str, aspect: str, word: int | None = None,
                phone: int | None = None) -> SlotName:
        self = super().__new__(cls, text)
        self.level, self.aspect, self.word, self.phone = level, aspect, word, phone
        return self

    def __getnewargs__(self) -> tuple:  # pickling (worker processes) keeps the fields
        return (str(self), self.level, self.aspect, self.word, self.phone)

    @classmethod
    def for_sentence(cls, aspect: str) -> SlotName:
        return cls(f"sentence.{aspect}", "sentence", aspect)

    @classmethod
    def for_word(cls, i: int, aspect: str) -> SlotName:
        return cls(f"word[{i}].{aspect}", "word", aspect, i)

    @classmethod
    def for_phone(cls, i: int, j: int) -> SlotName:
        return cls(f"word[{i}].phone[{j}].accuracy", "phone", "accuracy", i, j)

    @property
    def metric(self) -> str:
        """The aspect the metrics pool it under: "sentence.fluency", "word.stress", "phone.accuracy"."""
        return f"{self.level}.{self.aspect}"


@dataclass(frozen=True)
class Literal:
    """Text the model must write verbatim."""

    text: str


@dataclass(frozen=True)
class Slot:
    """A score the model chooses; `name` is unique within a template (e.g. "word[2].stress")."""

    name: SlotName
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
