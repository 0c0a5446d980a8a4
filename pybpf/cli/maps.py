"""``pybpf map ...``: bpftool's map verbs and grammar, with ``--json`` output shaped like bpftool's.

Maps are named as bpftool names them: ``id N``, ``pinned PATH`` or ``name NAME``; keys and values
are bytes (``1 0 0 0``, ``0x01 ...``, or ``hex 01 00 00 00``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pybpf
from pybpf import Map, MapFlags, MapInfo, MapSpec, MapType, UpdateFlags

from .progress import Progress


class UsageError(ValueError):
    """The command line does not say what to do; the message says what was expected."""


def _take(words: list[str], what: str) -> str:
    if not words:
        raise UsageError(f"expected {what}")
    return words.pop(0)


def _select(words: list[str]) -> list[MapInfo]:
    """``id N`` | ``pinned PATH`` | ``name NAME`` -> the matching maps' info."""
    how = _take(words, "'id N', 'pinned PATH' or 'name NAME'")
    if how == "id":
        with Map.from_id(_int(_take(words, "a map id"), "map id"), typed=False) as m:
            return [m.info()]
    if how == "pinned":
        with Map.from_pin(_take(words, "a pin path"), typed=False) as m:
            return [m.info()]
    if how == "name":
        name = _take(words, "a map name")
        found = [info for info in pybpf.maps() if info.name == name]
        if not found:
            raise UsageError(f"no map named {name!r}")
        return found
    raise UsageError(f"expected 'id', 'pinned' or 'name', got {how!r}")


def _open_one(words: list[str]) -> Map:
    infos = _select(words)
    if len(infos) > 1:
        raise UsageError(f"{len(infos)} maps are named {infos[0].name!r}: use 'id N' (ids {', '.join(str(i.id) for i in infos)})")
    return Map.from_id(infos[0].id, typed=False)


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a number") from None


def _bytes(words: list[str], size: int, what: str) -> bytes:
    """Read ``size`` bytes (``hex`` prefix: hex digits) from the front of ``words``."""
    base = 10
    if words and words[0] == "hex":
        words.pop(0)
        base = 16
    out = bytearray()
    while len(out) < size:
        word = _take(words, f"{size} bytes of {what} (got {len(out)})")
        try:
            value = int(word, 16) if base == 16 else int(word, 0)
        except ValueError:
            raise UsageError(f"{what}: {word!r} is not a byte") from None
        if not 0 <= value <= 255:
            raise UsageError(f"{what}: {word!r} is not a byte (0..255)")
        out.append(value)
    return bytes(out)


def _hex_json(data: bytes) -> list[str]:
    return [f"0x{b:02x}" for b in data]


def _hex_text(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def _fdinfo(m: Map) -> dict[str, str]:
    try:
        with open(f"/proc/self/fdinfo/{m.fd}") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def _show_record(info: MapInfo) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": info.id,
        "type": info.type.name.lower() if isinstance(info.type, MapType) else info.type,
        "name": info.name,
        "flags": int(info.flags),
        "bytes_key": info.key_size,
        "bytes_value": info.value_size,
        "max_entries": info.max_entries,
    }
    try:
        with Map.from_id(info.id, typed=False) as m:
            fdinfo = _fdinfo(m)
    except pybpf.BPFError:
        fdinfo = {}
    if "memlock" in fdinfo:
        record["bytes_memlock"] = int(fdinfo["memlock"])
    if "frozen" in fdinfo:
        record["frozen"] = int(fdinfo["frozen"])
    if info.btf_id:
        record["btf_id"] = info.btf_id
    return record


def _print_show(record: dict[str, Any]) -> None:
    print(f"{record['id']}: {record['type']}  name {record['name']}  flags {record['flags']:#x}")
    line = f"\tkey {record['bytes_key']}B  value {record['bytes_value']}B  max_entries {record['max_entries']}"
    if "bytes_memlock" in record:
        line += f"  memlock {record['bytes_memlock']}B"
    print(line)
    if record.get("frozen"):
        print("\tfrozen")


def _cmd_list(args: argparse.Namespace, words: list[str]) -> int:
    selected = bool(words)
    infos = _select(words) if selected else list(pybpf.maps())
    records = [_show_record(i) for i in infos]
    if args.json:
        print(json.dumps(records[0] if selected and len(records) == 1 else records, separators=(",", ":")))
    else:
        for record in records:
            _print_show(record)
    return 0


def _cmd_dump(args: argparse.Namespace, words: list[str]) -> int:
    with _open_one(words) as m:
        progress = Progress(f"dump map {m.id}", total=None)
        rows = []
        for key, value in m.items():
            rows.append((key, _as_bytes(m, value)))
            progress.step()
        progress.done()
        typed = _Typed(m)
        if args.json:
            print(json.dumps([_json_elem(k, v, typed(k, v)) for k, v in rows], separators=(",", ":")))
        else:
            for key, value in rows:
                print(_text_elem(key, value, typed(key, value)))
            print(f"Found {len(rows)} element{'s' if len(rows) != 1 else ''}")
    return 0


class _Typed:
    """Formats a map's keys and values by its BTF types, when the map has them (as bpftool does)."""

    def __init__(self, m: Map) -> None:
        info = m.info()
        self.btf: Any = None
        if info.btf_id and (info.btf_key_type_id or info.btf_value_type_id):
            from .. import BtfHandle  # BTF is imported only for maps that have it

            with BtfHandle.from_id(info.btf_id) as handle:
                self.btf = handle.btf()
            self.key_id, self.value_id = info.btf_key_type_id, info.btf_value_type_id

    def __call__(self, key: bytes, value: bytes | list[bytes]) -> dict[str, Any] | None:
        if self.btf is None:
            return None
        from ..btf.typed import format_value

        def one(type_id: int, data: bytes) -> Any:
            return format_value(self.btf, type_id, data) if type_id else data.hex()

        shown = [one(self.value_id, v) for v in value] if isinstance(value, list) else one(self.value_id, value)
        return {"key": one(self.key_id, key), "value": shown}


def _json_elem(key: bytes, value: bytes | list[bytes], typed: dict[str, Any] | None = None) -> dict[str, Any]:
    if isinstance(value, list):
        elem: dict[str, Any] = {"key": _hex_json(key), "values": [{"cpu": i, "value": _hex_json(v)} for i, v in enumerate(value)]}
    else:
        elem = {"key": _hex_json(key), "value": _hex_json(value)}
    if typed is not None:
        elem["formatted"] = typed
    return elem


def _text_elem(key: bytes, value: bytes | list[bytes], typed: dict[str, Any] | None = None) -> str:
    if typed is not None:
        return f"key: {json.dumps(typed['key'])}  value: {json.dumps(typed['value'])}"
    if isinstance(value, list):
        return f"key: {_hex_text(key)}\n" + "\n".join(f"value (CPU {i:02d}): {_hex_text(v)}" for i, v in enumerate(value))
    return f"key: {_hex_text(key)}  value: {_hex_text(value)}"


def _expect(words: list[str], word: str) -> None:
    got = _take(words, repr(word))
    if got != word:
        raise UsageError(f"expected {word!r}, got {got!r}")


def _as_bytes(m: Map, value: Any) -> Any:
    """Values for display: socket cookies and map/program ids come back as ints."""
    if isinstance(value, int):
        return value.to_bytes(8 if m.value_size == 8 else 4, sys.byteorder)
    return value


def _cmd_lookup(args: argparse.Namespace, words: list[str]) -> int:
    with _open_one(words) as m:
        _expect(words, "key")
        key = _bytes(words, m.key_size, "key")
        value = _as_bytes(m, m.lookup(key))
        typed = _Typed(m)(key, value)
        print(json.dumps(_json_elem(key, value, typed), separators=(",", ":")) if args.json else _text_elem(key, value, typed))
    return 0


_FLAGS = {"any": UpdateFlags.ANY, "noexist": UpdateFlags.NOEXIST, "exist": UpdateFlags.EXIST}
_MAP_VALUED = {MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS}


def _flags(words: list[str]) -> UpdateFlags:
    if not words:
        return UpdateFlags.ANY
    word = words.pop(0)
    if word not in _FLAGS or words:
        raise UsageError(f"unexpected {' '.join([word, *words])!r} (a flag is any, exist or noexist)")
    return _FLAGS[word]


def _cmd_update(args: argparse.Namespace, words: list[str]) -> int:
    with _open_one(words) as m:
        _expect(words, "key")
        key = _bytes(words, m.key_size, "key")
        _expect(words, "value")
        if m.type in _MAP_VALUED:
            with _open_one(words) as inner:
                m.update(key, inner, _flags(words))
        elif m.type in (MapType.PROG_ARRAY, MapType.SOCKMAP, MapType.SOCKHASH, MapType.XSKMAP, MapType.REUSEPORT_SOCKARRAY):
            raise UsageError(f"{m.type.name} values are programs or sockets: use the Python API")
        else:
            value = _bytes(words, m.value_size, "value")
            m.update(key, value, _flags(words))
    return 0


def _cmd_delete(args: argparse.Namespace, words: list[str]) -> int:
    with _open_one(words) as m:
        if _take(words, "'key'") != "key":
            raise UsageError("expected 'key' after the map")
        m.delete(_bytes(words, m.key_size, "key"))
    return 0


def _cmd_pin(args: argparse.Namespace, words: list[str]) -> int:
    with _open_one(words) as m:
        m.pin(_take(words, "a pin path"))
    return 0


def _cmd_freeze(args: argparse.Namespace, words: list[str]) -> int:
    with _open_one(words) as m:
        m.freeze()
    return 0


def _cmd_create(args: argparse.Namespace, words: list[str]) -> int:
    path = _take(words, "a pin path")
    fields: dict[str, Any] = {"flags": 0}
    names = {"type": "type", "key": "key_size", "value": "value_size", "entries": "max_entries", "name": "name",
             "flags": "flags", "extra": "map_extra", "numa": "numa_node"}
    while words:
        word = _take(words, "an attribute")
        if word not in names:
            raise UsageError(f"unknown attribute {word!r} (expected one of {', '.join(names)})")
        text = _take(words, f"a value for {word}")
        if word == "type":
            try:
                fields["type"] = MapType[text.upper()]
            except KeyError:
                raise UsageError(f"unknown map type {text!r}") from None
        elif word == "name":
            fields["name"] = text
        else:
            fields[names[word]] = _int(text, word)
    if "type" not in fields:
        raise UsageError("'type' is required")
    fields["flags"] = MapFlags(fields["flags"])
    with Map.create(MapSpec(**fields)) as m:
        m.pin(path)
    return 0


VERBS = {
    "list": _cmd_list, "show": _cmd_list, "dump": _cmd_dump, "lookup": _cmd_lookup, "update": _cmd_update,
    "delete": _cmd_delete, "pin": _cmd_pin, "create": _cmd_create, "freeze": _cmd_freeze,
}


def run(args: argparse.Namespace) -> int:
    """Dispatch ``pybpf map VERB WORDS...``."""
    words = list(args.words)
    return VERBS[args.verb](args, words)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pybpf map``."""
    parser = sub.add_parser("map", help="inspect and change maps (bpftool's verbs)", description=__doc__)
    parser.add_argument("verb", choices=sorted(VERBS))
    parser.add_argument("words", nargs=argparse.REMAINDER, help="id N | pinned PATH | name NAME, then key/value bytes")
    parser.set_defaults(func=run)

