"""bpftool's JSON writer (``json_writer.c``) in Python: the same bytes, compact or pretty, streamed.

bpftool's pretty layout is its own (``[{`` on one line, array items without line breaks), and its
text dump of a BTF map is that layout too, so matching it byte for byte takes its algorithm, not
``json.dumps``. Strings are escaped as bpftool escapes them, plus the other control characters
(bpftool never prints those as strings).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any


class Raw(str):
    """A token written as it is (bpftool's plain-text numbers such as ``0x1f``)."""


_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f", "\b": "\\b", "\\": "\\\\", '"': '\\"'}
_ESCAPES.update({chr(c): f"\\u{c:04x}" for c in range(0x20) if chr(c) not in _ESCAPES})
_ESCAPES["\x7f"] = "\\u007f"
_TABLE = str.maketrans(_ESCAPES)


def quote(text: str) -> str:
    """``text`` as a JSON string, escaped as bpftool's ``jsonw_puts`` does."""
    return f'"{text.translate(_TABLE)}"'


class JsonWriter:
    """Write JSON through ``write`` as bpftool's writer does; ``depth`` > 0 while a container is open."""

    def __init__(self, write: Callable[[str], object], pretty: bool = False) -> None:
        self._write = write
        self.pretty = pretty
        self.depth = 0
        self._sep = ""
        self._open: list[str] = []

    def _eol(self) -> None:
        if self.pretty:
            self._write("\n" + "    " * self.depth)

    def _eor(self) -> None:
        if self._sep:
            self._write(self._sep)
        self._sep = ","

    def _begin(self, bracket: str) -> None:
        self._eor()
        self._write(bracket)
        self.depth += 1
        self._open.append(bracket)
        self._sep = ""

    def _end(self, bracket: str) -> None:
        self.depth -= 1
        self._open.pop()
        if self._sep:
            self._eol()
        self._write(bracket)
        self._sep = ","

    def start_object(self) -> None:
        """``{``."""
        self._begin("{")

    def end_object(self) -> None:
        """``}``."""
        self._end("}")

    def start_array(self) -> None:
        """``[``."""
        self._begin("[")

    def end_array(self) -> None:
        """``]``."""
        self._end("]")

    @property
    def in_object(self) -> bool:
        """Whether the innermost open container is an object (the next value needs a name)."""
        return bool(self._open) and self._open[-1] == "{"

    def name(self, name: str) -> None:
        """An object member's name; its value follows."""
        self._eor()
        self._eol()
        self._sep = ""
        self._write(quote(name) + (": " if self.pretty else ":"))

    def value(self, value: Any) -> None:
        """Any JSON-shaped Python value: dicts, lists, tuples, strings, ints, floats, bools, None."""
        if isinstance(value, Mapping):
            self.start_object()
            for key, item in value.items():
                self.name(str(key))
                self.value(item)
            self.end_object()
        elif isinstance(value, list | tuple):
            self.start_array()
            for item in value:
                self.value(item)
            self.end_array()
        else:
            self._eor()
            self._write(_scalar(value))

    def field(self, name: str, value: Any) -> None:
        """``name`` and its value."""
        self.name(name)
        self.value(value)

    def close_all(self) -> None:
        """Close every open container (after an error part-way through a stream)."""
        while self._open:
            self._end("}" if self._open[-1] == "{" else "]")

    def finish(self) -> None:
        """The line end bpftool's ``jsonw_destroy`` writes after the document."""
        self._write("\n")


def _scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    if isinstance(value, bytes | bytearray | memoryview):
        return quote(bytes(value).hex())
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any, pretty: bool = False) -> str:
    """``value`` as bpftool would print it (no trailing newline)."""
    parts: list[str] = []
    JsonWriter(parts.append, pretty).value(value)
    return "".join(parts)
