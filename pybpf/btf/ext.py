"""``parse_ext``: the ``.BTF.ext`` section (func_info, line_info, CO-RE relocations) as data.

Records are grouped by the name of the ELF section they describe; ``insn_off`` is a byte offset
into that section, as clang writes it (divide by 8 for an instruction index). Names and source
lines are resolved through the string table of the object's ``.BTF``; the raw offsets are kept
too, as the kernel wants them when the same ``.BTF`` is loaded.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Callable
from typing import TypeVar

from ..errors import BTFError
from .parse import byte_order
from .spec import BTF

_HEADER = 24
_HEADER_CORE = 32
_R = TypeVar("_R")


class CoreReloKind(enum.IntEnum):
    """``enum bpf_core_relo_kind``: what a CO-RE relocation asks for."""

    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12


@dataclasses.dataclass(frozen=True, slots=True)
class FuncInfo:
    """``struct bpf_func_info``: the function (a ``Func`` type id) starting at ``insn_off``."""

    insn_off: int
    type_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class LineInfo:
    """``struct bpf_line_info``: the source line of the instruction at ``insn_off``."""

    insn_off: int
    file_name_off: int
    line_off: int
    line: int
    column: int
    file_name: str
    source: str


@dataclasses.dataclass(frozen=True, slots=True)
class CoreRelo:
    """``struct bpf_core_relo``: a CO-RE relocation of the instruction at ``insn_off``."""

    insn_off: int
    type_id: int
    access_str_off: int
    kind: CoreReloKind | int
    access: str


@dataclasses.dataclass(frozen=True, slots=True)
class BTFExt:
    """The records of a ``.BTF.ext`` section, each kind by ELF section name."""

    func_info: dict[str, tuple[FuncInfo, ...]]
    line_info: dict[str, tuple[LineInfo, ...]]
    core_relos: dict[str, tuple[CoreRelo, ...]]


def parse_ext(data: bytes, btf: BTF) -> BTFExt:
    """Parse ``.BTF.ext`` data; ``btf`` is the same object's parsed ``.BTF`` (for names)."""
    data = bytes(data)
    end = "<" if byte_order(data) == "little" else ">"
    if len(data) < _HEADER:
        raise BTFError(f"BTF.ext data too short for its header ({len(data)} of {_HEADER} bytes)")
    _, version, _flags, hdr_len = struct.unpack_from(end + "HBBI", data)
    if version != 1:
        raise BTFError(f"unsupported BTF.ext version {version} (expected 1)")
    if not _HEADER <= hdr_len <= len(data):
        raise BTFError(f"BTF.ext header length {hdr_len} is outside {_HEADER}..{len(data)}")
    body = data[hdr_len:]
    func_off, func_len, line_off, line_len = struct.unpack_from(end + "4I", data, 8)
    core_off, core_len = struct.unpack_from(end + "2I", data, 24) if hdr_len >= _HEADER_CORE else (0, 0)
    strings = btf.strings

    def text(offset: int, what: str) -> str:
        try:
            return strings[offset]
        except BTFError as err:
            raise BTFError(f"BTF.ext {what}: {err}") from None

    def func(rec: tuple[int, ...]) -> FuncInfo:
        return FuncInfo(rec[0], rec[1])

    def line(rec: tuple[int, ...]) -> LineInfo:
        return LineInfo(rec[0], rec[1], rec[2], rec[3] >> 10, rec[3] & 0x3FF, text(rec[1], "line_info file"), text(rec[2], "line_info line"))

    def relo(rec: tuple[int, ...]) -> CoreRelo:
        return CoreRelo(rec[0], rec[1], rec[2], _kind(rec[3]), text(rec[2], "core_relo access string"))

    func_info = _group(_sections(body, func_off, func_len, 8, "func_info", end, text), func)
    line_info = _group(_sections(body, line_off, line_len, 16, "line_info", end, text), line)
    core_relos = _group(_sections(body, core_off, core_len, 16, "core_relo", end, text), relo)
    return BTFExt(func_info, line_info, core_relos)


def _kind(value: int) -> CoreReloKind | int:
    try:
        return CoreReloKind(value)
    except ValueError:
        return value


def _group(blocks: list[tuple[str, list[tuple[int, ...]]]], make: Callable[[tuple[int, ...]], _R]) -> dict[str, tuple[_R, ...]]:
    """Records by section name (blocks naming the same section are joined)."""
    out: dict[str, tuple[_R, ...]] = {}
    for name, records in blocks:
        out[name] = out.get(name, ()) + tuple(make(rec) for rec in records)
    return out


def _sections(
    body: bytes, off: int, size: int, min_record: int, what: str, end: str, text: Callable[[int, str], str]
) -> list[tuple[str, list[tuple[int, ...]]]]:
    """The ``(section name, records)`` blocks of one info kind; records are tuples of u32."""
    if not size:
        return []
    if off + size > len(body):
        raise BTFError(f"BTF.ext {what} ({off}+{size}) runs past the end of the data ({len(body)} bytes)")
    if off % 4:
        raise BTFError(f"BTF.ext {what} offset {off} is not 4-byte aligned")
    if size < 4:
        raise BTFError(f"BTF.ext {what} is too short for its record size")
    chunk = body[off : off + size]
    (record_size,) = struct.unpack_from(end + "I", chunk)
    if record_size < min_record or record_size % 4:
        raise BTFError(f"BTF.ext {what} record size {record_size} is not a multiple of 4 of at least {min_record}")
    fmt = f"{end}{record_size // 4}I"
    blocks = []
    pos = 4
    while pos < len(chunk):
        if pos + 8 > len(chunk):
            raise BTFError(f"BTF.ext {what}: truncated section header at byte {pos}")
        name_off, count = struct.unpack_from(end + "2I", chunk, pos)
        pos += 8
        name = text(name_off, f"{what} section name")
        if count == 0:
            raise BTFError(f"BTF.ext {what} for {name!r} has no records")
        need = count * record_size
        if pos + need > len(chunk):
            raise BTFError(f"BTF.ext {what} for {name!r}: {count} records of {record_size} bytes run past the end")
        blocks.append((name, list(struct.iter_unpack(fmt, chunk[pos : pos + need]))))
        pos += need
    return blocks
