"""Errors that bad input (reference text, phones, audio, model text) can cause.

Every such error is a `PronunciationInputError` with a stable machine `code`: the worker stores
the code on a failed submission and the gateway returns it to the LMS, so the codes are part of
the public contract and must not change. A bad input ends a submission as `failed`; it is never
retried, which is why these are kept apart from transient faults (S3, DB) by type.

The errors pickle with their attributes intact, because Celery may carry them across processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PronunciationInputError(ValueError):
    """A request that cannot be scored as given; `code` says why, for machines."""

    code: str = "pronunciation_input"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses have their own __init__ signatures; rebuild without calling them.
        return (_restore, (type(self), self.code, self.message, dict(self.__dict__)))


def _restore(
    cls: type[PronunciationInputError], code: str, message: str, state: dict[str, Any]
) -> PronunciationInputError:
    err = cls.__new__(cls)
    ValueError.__init__(err, code, message)
    err.__dict__.update(state)
    return err


# --- reference text and phones -------------------------------------------------------------


class EmptyReferenceError(PronunciationInputError):
    """The reference text holds no word to score."""

    def __init__(self, message: str = "the reference text contains no words") -> None:
        super().__init__("empty_reference", message)


class ReferenceTooLongError(PronunciationInputError):
    """The reference is longer than the service accepts (prompt length, decode time)."""

    def __init__(self, message: str) -> None:
        super().__init__("reference_too_long", message)


class UnknownWordError(PronunciationInputError):
    """Words the pronunciation lexicon lacks; the caller may send phones for them."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        listed = ", ".join(repr(w) for w in self.words)
        super().__init__(
            "unknown_word",
            f"not in the pronunciation lexicon (CMUdict): {listed}; "
            "send reference phones for the sentence to score it",
        )


class BadPhonesError(PronunciationInputError):
    """Caller-given reference phones that do not fit the text or are not ARPAbet."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_phones", message)


# --- audio ---------------------------------------------------------------------------------


class AudioUndecodableError(PronunciationInputError):
    """Bytes that are not audio we can decode (or decode to NaN/inf samples)."""

    def __init__(self, message: str) -> None:
        super().__init__("audio_undecodable", message)


class AudioTooShortError(PronunciationInputError):
    def __init__(self, message: str) -> None:
        super().__init__("audio_too_short", message)


class AudioTooLongError(PronunciationInputError):
    """Longer than the Qwen2-Audio encoder window (30 s); it would be cut silently."""

    def __init__(self, message: str) -> None:
        super().__init__("audio_too_long", message)


class AudioSilentError(PronunciationInputError):
    """No speech energy: scoring it would produce confident numbers about nothing."""

    def __init__(self, message: str) -> None:
        super().__init__("audio_silent", message)


# --- model output --------------------------------------------------------------------------


class OutputFormatError(PronunciationInputError):
    """Text that does not follow the answer format; says where and what was expected."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        context: str | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        self.line = line
        self.column = column
        self.context = context
        self.expected = expected
        self.found = found
        super().__init__("malformed_output", message)


ERROR_CODES: tuple[str, ...] = (
    "empty_reference",
    "reference_too_long",
    "unknown_word",
    "bad_phones",
    "audio_undecodable",
    "audio_too_short",
    "audio_too_long",
    "audio_silent",
    "malformed_output",
)
"""Every code these errors carry; stored by the worker, returned by the gateway."""
