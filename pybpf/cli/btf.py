"""``pybpf btf dump id N|file PATH|map N [format raw]``: BTF types as bpftool prints them (its
``raw`` format and field names: ``type_id``, ``nr_elems``, ``(anon)``), or its JSON with ``--json``.

``file`` takes raw BTF (``/sys/kernel/btf/*``) or an ELF object (its ``.BTF`` section, as the
compiler wrote it); a file is read up to ``MAX_FILE`` bytes, so ``/dev/zero`` or a huge file is a
one-line error, not a hang. ``format c`` (C declarations) is not implemented and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from ..btf import BTF, BtfHandle
from ..map import Map
from ..btf import parse
from ..btf.layout import HEADER, HEADER_SIZE, MAGIC
from ..btf.types import (
    Array,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    Float,
    Func,
    FuncProto,
    Fwd,
    Int,
    IntEncoding,
    Struct,
    Type,
    Union,
    Var,
)
from .words import UsageError, parse_int

MAX_FILE = 256 << 20
"""The most bytes ``btf dump file`` reads (vmlinux's BTF is about 6 MiB)."""

_LINKAGES = {0: "static", 1: "global", 2: "extern"}



def _take(words: list[str], what: str) -> str:
    """The first of ``words``, taken; UsageError saying what was expected when there is none."""
    if not words:
        raise UsageError(f"expected {what}")
    return words.pop(0)

def _name(text: str) -> str:
    return text or "(anon)"


def _encoding(t: Int) -> str:
    if t.encoding & IntEncoding.SIGNED:
        return "SIGNED"
    if t.encoding & IntEncoding.CHAR:
        return "CHAR"
    if t.encoding & IntEncoding.BOOL:
        return "BOOL"
    return "(none)"


def record(t: Type) -> dict[str, Any]:
    """One type as bpftool's JSON shows it (``id``, ``kind``, ``name``, then the kind's fields)."""
    out: dict[str, Any] = {"id": t.id, "kind": t.kind.name, "name": _name(t.name)}
    if isinstance(t, Int):
        out.update(size=t.size, bits_offset=t.offset, nr_bits=t.bits, encoding=_encoding(t))
    elif isinstance(t, Array):
        out.update(type_id=t.type, index_type_id=t.index_type, nr_elems=t.nelems)
    elif isinstance(t, Struct | Union):
        members = []
        for m in t.members:
            member: dict[str, Any] = {"name": _name(m.name), "type_id": m.type, "bits_offset": m.offset}
            if m.bitfield_size:
                member["bitfield_size"] = m.bitfield_size
            members.append(member)
        out.update(size=t.size, vlen=len(t.members), members=members)
    elif isinstance(t, Enum | Enum64):
        out.update(encoding="SIGNED" if t.signed else "UNSIGNED", size=t.size, vlen=len(t.values),
                   values=[{"name": _name(v.name), "val": v.value} for v in t.values])
    elif isinstance(t, Fwd):
        out.update(fwd_kind="union" if t.union else "struct")
    elif isinstance(t, Func):
        out.update(type_id=t.type, linkage=_LINKAGES.get(int(t.linkage), str(int(t.linkage))))
    elif isinstance(t, FuncProto):
        out.update(ret_type_id=t.type, vlen=len(t.params), params=[{"name": _name(p.name), "type_id": p.type} for p in t.params])
    elif isinstance(t, Var):
        out.update(type_id=t.type, linkage=_LINKAGES.get(int(t.linkage), str(int(t.linkage))))
    elif isinstance(t, Datasec):
        out.update(size=t.size, vlen=len(t.vars), vars=[{"type_id": v.type, "offset": v.offset, "size": v.size} for v in t.vars])
    elif isinstance(t, Float):
        out.update(size=t.size)
    elif isinstance(t, DeclTag):
        out.update(type_id=t.type, component_idx=t.component_idx)
    else:  # PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG
        out.update(type_id=getattr(t, "type", 0))
    return out


def raw_lines(btf: BTF, t: Type) -> str:
    """One type in bpftool's ``format raw``: ``[id] KIND 'name' field=value ...`` and indented items."""
    rec = record(t)
    head = f"[{t.id}] {t.kind.name} '{rec['name']}'"
    if isinstance(t, Var):
        return f"{head} type_id={t.type}, linkage={rec['linkage']}"
    scalars = " ".join(f"{k}={v}" for k, v in rec.items() if k not in ("id", "kind", "name") and not isinstance(v, list))
    lines = [f"{head} {scalars}" if scalars else head]
    if isinstance(t, Struct | Union):
        for m in rec["members"]:
            extra = f" bitfield_size={m['bitfield_size']}" if "bitfield_size" in m else ""
            lines.append(f"\t'{m['name']}' type_id={m['type_id']} bits_offset={m['bits_offset']}{extra}")
    elif isinstance(t, Enum):
        lines += [f"\t'{v['name']}' val={v['val']}" for v in rec["values"]]
    elif isinstance(t, Enum64):
        suffix = "LL" if t.signed else "ULL"
        lines += [f"\t'{v['name']}' val={v['val']}{suffix}" for v in rec["values"]]
    elif isinstance(t, FuncProto):
        lines += [f"\t'{p['name']}' type_id={p['type_id']}" for p in rec["params"]]
    elif isinstance(t, Datasec):
        for v in t.vars:
            try:
                var_name = btf.type_by_id(v.type).name
            except KeyError:
                var_name = "?"
            lines.append(f"\ttype_id={v.type} offset={v.offset} size={v.size} (VAR '{_name(var_name)}')")
    return "\n".join(lines)


def read_file(path: str) -> BTF:
    """The BTF of a raw BTF file or an ELF object's ``.BTF``, read within ``MAX_FILE`` bytes."""
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
        if head[:4] == b"\x7fELF":
            rest = f.read(MAX_FILE)
            if f.read(1):
                raise ValueError(f"{path}: larger than {MAX_FILE >> 20} MiB: not a BPF object")
            from ..elf.reader import ElfFile

            section = ElfFile(head + rest, path).section(".BTF")
            if section is None:
                raise ValueError(f"{path}: the object has no .BTF section (compile with -g)")
            return parse(section.data)
        native = MAGIC.to_bytes(2, sys.byteorder)
        if len(head) < HEADER_SIZE or head[:2] not in (native, native[::-1]):
            raise ValueError(f"{path}: neither BTF (no BTF magic in its first bytes) nor an ELF object")
        if head[:2] != native:  # the other byte order: parse() says so
            return parse(head + f.read(MAX_FILE))
        _, _, _, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack(head)
        size = hdr_len + max(type_off + type_len, str_off + str_len)
        if size > MAX_FILE:
            raise ValueError(f"{path}: its header says {size} bytes, more than {MAX_FILE >> 20} MiB")
        return parse(head + f.read(max(size - HEADER_SIZE, 0)))


def _source(words: list[str]) -> BTF:
    how = _take(words, "'id N', 'file PATH' or 'map N'")
    if how == "file":
        path = _take(words, "a file")
        if os.path.realpath(path) == "/sys/kernel/btf/vmlinux":
            return BTF.vmlinux()
        return read_file(path)
    if how == "id":
        with BtfHandle.from_id(parse_int(_take(words, "a BTF id"), "BTF id")) as handle:
            return handle.btf()
    if how == "map":
        with Map.from_id(parse_int(_take(words, "a map id"), "map id"), typed=False) as m:
            btf_id = m.info().btf_id
        if not btf_id:
            raise UsageError("that map has no BTF")
        with BtfHandle.from_id(btf_id) as handle:
            return handle.btf()
    raise UsageError(f"expected 'id', 'file' or 'map', got {how!r}")


def _format(words: list[str]) -> None:
    if not words:
        return
    if words[0] != "format":
        raise UsageError(f"unexpected {' '.join(words)!r} (expected 'format raw')")
    words.pop(0)
    kind = _take(words, "'raw' or 'c'")
    if kind == "c":
        raise UsageError("'format c' (C declarations) is not implemented by pybpf: use 'format raw', or bpftool for C")
    if kind != "raw":
        raise UsageError(f"unknown format {kind!r} (expected 'raw')")
    if words:
        raise UsageError(f"unexpected {' '.join(words)!r} after the format")


def _own(btf: BTF) -> Iterator[Type]:
    return (btf.type_by_id(i) for i in range(btf.first_id, len(btf)))


def run(args: argparse.Namespace) -> int:
    """``pybpf btf dump SOURCE [format raw]``."""
    words = list(args.words)
    btf = _source(words)
    _format(words)
    if args.json:
        print(json.dumps({"types": [record(t) for t in _own(btf)]}, separators=(",", ":")))
    else:
        for t in _own(btf):
            print(raw_lines(btf, t))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``pybpf btf``."""
    parser = sub.add_parser("btf", help="dump BTF types (bpftool's 'btf dump ... format raw')")
    parser.add_argument("verb", choices=["dump"])
    parser.add_argument("words", nargs=argparse.REMAINDER, help="id N | file PATH | map N, then optionally 'format raw'")
    parser.set_defaults(func=run)
