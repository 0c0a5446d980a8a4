"""The BTF string section: NUL-terminated names addressed by byte offset, read and built."""

from __future__ import annotations

from ..errors import BTFError

_CODEC = ("utf-8", "surrogateescape")  # any bytes round-trip through str


class StringTable:
    """A string section; ``table[offset]`` is the string starting there (split BTF: after the base's)."""

    __slots__ = ("data", "base", "_start")

    def __init__(self, data: bytes, base: StringTable | None = None) -> None:
        """Check the section's framing (empty, or starts and ends with NUL) and keep it."""
        if base is None and (not data or data[0] != 0):
            raise BTFError("BTF string section must start with an empty string (a NUL byte)")
        if data and data[-1] != 0:
            raise BTFError("BTF string section must end with a NUL byte")
        self.data = bytes(data)
        self.base = base
        self._start = len(base) if base is not None else 0

    def __len__(self) -> int:
        return self._start + len(self.data)

    def __getitem__(self, offset: int) -> str:
        if offset < self._start and self.base is not None and offset >= 0:
            return self.base[offset]
        rel = offset - self._start
        if not 0 <= rel < len(self.data):
            raise BTFError(f"string offset {offset} is outside the string section ({len(self)} bytes)")
        if rel == 0 and self.base is None:
            return ""
        return self.data[rel : self.data.index(0, rel)].decode(*_CODEC)

    def offsets_of(self, text: str) -> list[int]:
        """Every offset in this section (not the base's) that reads as ``text`` (names may point
        into the tail of a longer string, so every occurrence counts)."""
        raw = text.encode(*_CODEC)
        if not raw:
            return []
        data, found = self.data, []
        needle = raw + b"\0"
        at = data.find(needle)
        while at >= 0:
            found.append(self._start + at)
            at = data.find(needle, at + 1)
        return found

    def split(self) -> dict[int, str]:
        """Every string that starts right after a NUL, by offset (names sharing a tail are not listed)."""
        out: dict[int, str] = {}
        offset = self._start
        for raw in self.data.split(b"\0")[:-1]:
            out[offset] = raw.decode(*_CODEC)
            offset += len(raw) + 1
        return out


class StringTableBuilder:
    """Collects strings, each once, and hands out their offsets."""

    __slots__ = ("_offsets", "_chunks", "_size")

    def __init__(self, start: int = 0) -> None:
        """An empty table; ``start`` is the base's string section size for split BTF (0 otherwise)."""
        self._offsets: dict[str, int] = {"": 0}
        self._chunks: list[bytes] = [] if start else [b"\0"]
        self._size = start + (0 if start else 1)

    def add(self, text: str) -> int:
        """The offset of ``text``, adding it if new."""
        found = self._offsets.get(text)
        if found is not None:
            return found
        raw = text.encode(*_CODEC)
        if 0 in raw:
            raise BTFError(f"BTF name {text!r} contains a NUL byte")
        offset = self._size
        self._offsets[text] = offset
        self._chunks.append(raw + b"\0")
        self._size += len(raw) + 1
        return offset

    def encode(self) -> bytes:
        """The section's bytes."""
        return b"".join(self._chunks)
