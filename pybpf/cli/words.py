"""The words of a command line, read as bpftool reads them, and the errors a verb reports."""

from __future__ import annotations

_U32 = 2**32 - 1


class CommandError(Exception):
    """A failure the command reports as one line, with the exit ``status`` a script would check."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UsageError(CommandError, ValueError):
    """The words do not say what to do; the message says what was expected."""


class Words:
    """The words after the verb, taken from the front; ``end()`` refuses any left over."""

    def __init__(self, words: list[str]) -> None:
        self._words = list(words)

    def __bool__(self) -> bool:
        return bool(self._words)

    def __len__(self) -> int:
        return len(self._words)

    def peek(self) -> str | None:
        """The next word without taking it."""
        return self._words[0] if self._words else None

    def take(self, what: str) -> str:
        """The next word; UsageError saying ``what`` was expected when there is none."""
        if not self._words:
            raise UsageError(f"expected {what}")
        return self._words.pop(0)

    def accept(self, word: str) -> bool:
        """Take the next word if it is ``word``."""
        if self._words and self._words[0] == word:
            self._words.pop(0)
            return True
        return False

    def expect(self, word: str) -> None:
        """Take ``word`` or refuse."""
        got = self.take(f"'{word}'")
        if got != word:
            raise UsageError(f"expected '{word}', got '{got}'")

    def integer(self, what: str, low: int = 0, high: int = _U32) -> int:
        """The next word as an integer in ``low..high`` (C's ``strtoul`` bases, as bpftool reads them)."""
        return parse_int(self.take(what), what, low, high)

    def id(self, what: str) -> int:
        """An object id: a u32 (a larger number would wrap in the kernel's struct)."""
        return self.integer(what, 0, _U32)

    def data(self, size: int, what: str) -> bytes:
        """``size`` bytes, one word each (``hex`` first: the words are hex digits, as bpftool's ``DATA``)."""
        hexa = self.accept("hex")
        out = bytearray()
        while len(out) < size:
            word = self.take(f"{size} bytes of {what} (got {len(out)})")
            try:
                value = int(word, 16) if hexa else _strtoul(word)
            except ValueError:
                raise UsageError(f"{what}: '{word}' is not a byte") from None
            if not 0 <= value <= 255:
                raise UsageError(f"{what}: '{word}' is not a byte (0..255)")
            out.append(value)
        return bytes(out)

    def end(self) -> None:
        """Refuse words left over (bpftool would silently ignore some of them)."""
        if self._words:
            raise UsageError(f"unexpected '{' '.join(self._words)}'")

    def rest(self) -> list[str]:
        """Every word left, taken."""
        words, self._words = self._words, []
        return words


def _strtoul(text: str) -> int:
    """C's ``strtoul(text, &end, 0)`` on a whole word: ``0x`` hex, a leading ``0`` octal, else decimal."""
    body = text[1:] if text[:1] in "+-" else text
    if body[:2].lower() == "0x":
        value = int(body[2:], 16)
    elif len(body) > 1 and body[0] == "0":
        value = int(body[1:], 8)
    else:
        value = int(body, 10)
    if not body or not body[-1].isalnum():
        raise ValueError(text)
    return -value if text[:1] == "-" else value


def parse_int(text: str, what: str, low: int = 0, high: int = _U32) -> int:
    """``text`` as an integer in ``low..high``; UsageError naming ``what`` otherwise."""
    try:
        value = _strtoul(text)
    except ValueError:
        raise UsageError(f"{what}: '{text}' is not a number") from None
    if not low <= value <= high:
        raise UsageError(f"{what}: {text} is out of range ({low}..{high})")
    return value
