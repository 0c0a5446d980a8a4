"""``pybpf btf dump id N|file PATH|map N``: BTF types in bpftool's raw format, or as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
from typing import Any

from .. import BTF, BtfHandle, Map
from ..btf import parse
from ..btf.types import Type
from .maps import UsageError, _int, _take


def _value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if dataclasses.is_dataclass(value):
        return {f.name: _value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_value(v) for v in value]
    return value


def _fields(t: Type) -> dict[str, Any]:
    return {f.name: _value(getattr(t, f.name)) for f in dataclasses.fields(t) if f.name not in ("id", "name")}


def _raw_line(t: Type) -> str:
    """``[id] KIND 'name' key=value ...``; members, parameters and values on indented lines."""
    scalars, lists = [], []
    for key, value in _fields(t).items():
        (lists if isinstance(value, list) else scalars).append((key, value))
    line = f"[{t.id}] {t.kind.name} '{t.name or '(anon)'}'" + "".join(f" {k}={v}" for k, v in scalars)
    for _, items in lists:
        for item in items:
            line += "\n\t" + " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in item.items())
    return line


def _source(words: list[str]) -> BTF:
    how = _take(words, "'id N', 'file PATH' or 'map N'")
    if how == "file":
        path = _take(words, "a file")
        if path == "/sys/kernel/btf/vmlinux":
            return BTF.vmlinux()
        with open(path, "rb") as f:
            return parse(f.read())
    if how == "id":
        with BtfHandle.from_id(_int(_take(words, "a BTF id"), "BTF id")) as handle:
            return handle.btf()
    if how == "map":
        with Map.from_id(_int(_take(words, "a map id"), "map id"), typed=False) as m:
            btf_id = m.info().btf_id
        if not btf_id:
            raise UsageError("that map has no BTF")
        with BtfHandle.from_id(btf_id) as handle:
            return handle.btf()
    raise UsageError(f"expected 'id', 'file' or 'map', got {how!r}")


def run(args: argparse.Namespace) -> int:
    """``pybpf btf dump SOURCE``."""
    btf = _source(list(args.words))
    types = [t for t in btf.types[1:]]
    if args.json:
        print(json.dumps({"types": [{"id": t.id, "kind": t.kind.name, "name": t.name, **_fields(t)} for t in types]},
                         separators=(",", ":")))
    else:
        for t in types:
            print(_raw_line(t))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pybpf btf``."""
    parser = sub.add_parser("btf", help="dump BTF types (bpftool's 'btf dump ... format raw')")
    parser.add_argument("verb", choices=["dump"])
    parser.add_argument("words", nargs=argparse.REMAINDER, help="id N | file PATH | map N")
    parser.set_defaults(func=run)
