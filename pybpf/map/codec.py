"""Keys and values to bytes and back: bytes-like, ``int`` (native order) or a declared ctypes type.

A ``Codec`` writes straight into a caller's buffer (no intermediate objects on the hot path)
and checks sizes and ranges before any syscall, so nothing is ever silently truncated.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .._sys.cpus import possible_cpus

_INT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _is_int_ctype(ctype: Any) -> bool:
    return isinstance(ctype, type) and issubclass(ctype, ctypes._SimpleCData) and _code(ctype) in "bBhHiIlLqQ?"


def _code(ctype: Any) -> str:
    """The ``struct`` code of a simple ctypes type (``c_uint32`` -> "I")."""
    code: str = ctype._type_
    return code


class Field:
    """One side of an element (key or value): its size, declared type and conversions."""

    def __init__(self, size: int, ctype: Any, what: str) -> None:
        self.size = size
        self.ctype = ctype
        self.what = what
        signed = _is_int_ctype(ctype) and _code(ctype) in "bhilq"
        fmt = _INT_FORMATS.get(size)
        self._int = struct.Struct("=" + (fmt.lower() if signed else fmt)) if fmt else None
        self._signed = signed
        self.decode: Callable[[Any], Any] = self._decoder()
        self.unpack_int = self._int.unpack_from if (self._int is not None and _is_int_ctype(ctype) and _code(ctype) != "?") else None
        """``struct`` unpack of a declared integer type (``decode`` is ``unpack_int(buf)[0]``)."""
        self.fast_put: Callable[[Any, int, Any], None] = self._int.pack_into if self._int is not None else self.put
        """``put`` for the common case: packs an ``int`` directly; anything else raises
        ``struct.error`` and the caller falls back to ``put`` (which checks and explains)."""

    def put(self, buf: bytearray | memoryview, offset: int, obj: Any) -> None:
        """Write ``obj`` at ``offset`` of ``buf``; ValueError/TypeError for a wrong size or range."""
        if type(obj) is int and self._int is not None:
            try:
                self._int.pack_into(buf, offset, obj)
            except struct.error:
                self._range_error(obj)
            return
        data = self.encode(obj)
        buf[offset : offset + self.size] = data

    def encode(self, obj: Any) -> bytes:
        """``obj`` as exactly ``size`` bytes."""
        if isinstance(obj, int) and not isinstance(obj, bool) or type(obj) is bool:
            obj = int(obj)
            if self._int is not None:
                try:
                    return self._int.pack(obj)
                except struct.error:
                    self._range_error(obj)
            try:
                return int(obj).to_bytes(self.size, sys.byteorder, signed=self._signed)
            except OverflowError:
                self._range_error(obj)
        if isinstance(obj, ctypes._SimpleCData | ctypes.Structure | ctypes.Union | ctypes.Array):
            if self.ctype is not None and not isinstance(obj, self.ctype):
                raise TypeError(f"{self.what} must be a {self.ctype.__name__}, not {type(obj).__name__}")
            data = bytes(obj)
        elif isinstance(obj, bytes | bytearray | memoryview):
            data = bytes(obj)
        else:
            kind = f", an int or {self.ctype.__name__}" if self.ctype is not None else " or an int"
            raise TypeError(f"{self.what} must be bytes-like{kind}, not {type(obj).__name__}")
        if len(data) != self.size:
            raise ValueError(f"{self.what} must be {self.size} bytes, got {len(data)}")
        return data

    def put_many(self, buf: bytearray, items: Sequence[Any], stride: int) -> None:
        """Write ``items`` back to back, ``stride`` bytes apart; all ints in one ``struct`` call when possible."""
        if self._int is not None and stride == self.size:
            try:
                struct.pack_into(f"={len(items)}{self._int.format[-1]}", buf, 0, *items)
                return
            except struct.error:
                pass  # not all plain ints in range: go element by element for a precise error
        for i, item in enumerate(items):
            self.put(buf, i * stride, item)

    def decode_many(self, buf: bytes, count: int, stride: int) -> list[Any]:
        """``count`` elements back to back, ``stride`` bytes apart, decoded."""
        if self.unpack_int is not None and stride == self.size:
            return list(struct.unpack_from(f"={count}{self._int.format[-1]}", buf))  # type: ignore[union-attr]
        if self.ctype is None and stride == self.size:
            return [buf[i : i + stride] for i in range(0, count * stride, stride)]
        decode, view = self.decode, memoryview(buf)
        return [decode(view[i * stride : (i + 1) * stride]) for i in range(count)]

    def _range_error(self, obj: int) -> None:
        bits = self.size * 8
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self._signed else (0, (1 << bits) - 1)
        raise ValueError(f"{self.what} {obj} is out of range for {self.size} bytes ({lo}..{hi})")

    def _decoder(self) -> Callable[[Any], Any]:
        ctype = self.ctype
        if ctype is None:
            return bytes
        if _is_int_ctype(ctype):
            unpack = struct.Struct("=?").unpack_from if _code(ctype) == "?" else self._int.unpack_from  # type: ignore[union-attr]
            return lambda buf: unpack(buf)[0]
        decode: Callable[[Any], Any] = ctype.from_buffer_copy
        return decode


class PerCpuField(Field):
    """A per-CPU value: one ``size``-byte value per possible CPU, each 8-byte aligned."""

    def __init__(self, size: int, ctype: Any, what: str) -> None:
        super().__init__(size, ctype, what)
        self.cpus = possible_cpus()
        self.stride = (size + 7) & ~7
        self.total = self.stride * self.cpus
        self.fast_put = self.put
        self.unpack_int = None
        one = self.decode
        stride, size_ = self.stride, size
        self.decode = lambda buf: [one(bytes(memoryview(buf)[i * stride : i * stride + size_])) for i in range(self.cpus)]

    def put(self, buf: bytearray | memoryview, offset: int, obj: Any) -> None:
        """Write one value per CPU (a sequence of ``cpus`` values, or one value for every CPU)."""
        values: Sequence[Any]
        if isinstance(obj, list | tuple):
            values = obj
            if len(values) != self.cpus:
                raise ValueError(f"{self.what} must hold one value per possible CPU ({self.cpus}), got {len(values)}")
        else:
            values = [obj] * self.cpus
        for i, val in enumerate(values):
            Field.put(self, buf, offset + i * self.stride, val)

    def decode_many(self, buf: bytes, count: int, stride: int) -> list[Any]:
        """``count`` per-CPU values (each a list), ``stride`` bytes apart: always element by element
        (``Field``'s shortcut for plain bytes would hand out one blob when there is one CPU)."""
        decode, view = self.decode, memoryview(buf)
        return [decode(view[i * stride : (i + 1) * stride]) for i in range(count)]
