"""pybpf map: bpftool's map verbs, grammar and output (text and JSON, byte for byte where bpftool's
is defined: show, dump with and without BTF, lookup). Keys and values are bytes, one word each
(``1 0 0 0``, ``0x01 ...``, or ``hex 01 00 00 00``).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._sys import commands
from .._sys.constants import MapType, ProgramType
from ..errors import BPFError, KeyNotFoundError
from .command import CommandError, Context, UsageError, Words, verb
from .formatted import Formatter
from .jsonw import JsonWriter
from .objects import MAP_GRAMMAR, PROG_GRAMMAR, closing, map_fd, map_fds, prog_fds

if TYPE_CHECKING:
    from .._sys.attrs import MapInfoStruct
    from ..map import Map


def _wrapped(names: list[str], indent: int, width: int = 76) -> str:
    """``a | b | ...`` broken into lines of at most ``width`` characters."""
    lines, line = [], ""
    for name in names:
        piece = name if not line else f"{line} | {name}"
        if line and len(piece) + indent > width:
            lines.append(line + " |")
            line = name
        else:
            line = piece
    return ("\n" + " " * indent).join([*lines, line])


GRAMMAR = f"""{MAP_GRAMMAR}
{PROG_GRAMMAR}
DATA := {{ [hex] BYTES }}
VALUE := {{ DATA | MAP | PROG }}
UPDATE_FLAGS := {{ any | exist | noexist }}
TYPE := {{ {_wrapped([t.name.lower() for t in MapType if t], 10)} }}"""

STATUS_NOT_FOUND = 256 - errno.ENOENT
"""bpftool's status when a key is not in the map (it returns -ENOENT)."""

_MAP_OF_MAPS = {MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS}
_SOCKET_VALUED = {MapType.SOCKMAP, MapType.SOCKHASH, MapType.XSKMAP, MapType.REUSEPORT_SOCKARRAY}


# ---- bpftool's byte layouts ---------------------------------------------------------------------

def hex_words(data: bytes) -> str:
    """bpftool's ``fprint_hex``: ``01 02 ...``, two spaces every 8 bytes, a new line every 16."""
    out = []
    for i, byte in enumerate(data):
        if i:
            out.append("\n" if i % 16 == 0 else "  " if i % 8 == 0 else " ")
        out.append(f"{byte:02x}")
    return "".join(out)


def _hex_json(data: bytes) -> list[str]:
    return [f"0x{b:02x}" for b in data]


def _type_name(value: int, enum: type[MapType] | type[ProgramType]) -> str | int:
    """libbpf's name of a map or program type (its names are the enum's, lower case); the number
    when this pybpf does not know the type."""
    try:
        return enum(value).name.lower()
    except ValueError:
        return value


def _fdinfo(fd: int) -> dict[str, str]:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def _name(raw: MapInfoStruct) -> str:
    return bytes(raw.name).split(b"\0", 1)[0].decode(errors="replace")


# ---- show -------------------------------------------------------------------------------------

def _header(raw: MapInfoStruct) -> dict[str, Any]:
    record: dict[str, Any] = {"id": raw.id, "type": _type_name(raw.type, MapType)}
    if _name(raw):
        record["name"] = _name(raw)
    record["flags"] = raw.map_flags
    return record


def _header_text(raw: MapInfoStruct) -> str:
    kind = _type_name(raw.type, MapType)
    name = _name(raw)
    return (f"{raw.id}: " + (f"{kind}  " if isinstance(kind, str) else f"type {kind}  ")
            + (f"name {name}  " if name else "") + f"flags {raw.map_flags:#x}\n")


def _show_json(ctx: Context, fd: int) -> None:
    raw = commands.map_info(fd)
    fdinfo = _fdinfo(fd)
    record = _header(raw)
    record.update(bytes_key=raw.key_size, bytes_value=raw.value_size, max_entries=raw.max_entries)
    if "memlock" in fdinfo:
        record["bytes_memlock"] = int(fdinfo["memlock"])
    if raw.type == MapType.PROG_ARRAY:
        if "owner_prog_type" in fdinfo:
            record["owner_prog_type"] = _type_name(int(fdinfo["owner_prog_type"]), ProgramType)
        if "owner_jited" in fdinfo:
            record["owner_jited"] = bool(int(fdinfo["owner_jited"]))
    record["frozen"] = int(fdinfo.get("frozen", "0"))
    if raw.btf_id:
        record["btf_id"] = raw.btf_id
    ctx.emit(record)


def _show_text(ctx: Context, fd: int) -> None:
    raw = commands.map_info(fd)
    fdinfo = _fdinfo(fd)
    text = _header_text(raw) + f"\tkey {raw.key_size}B  value {raw.value_size}B  max_entries {raw.max_entries}"
    if "memlock" in fdinfo:
        text += f"  memlock {fdinfo['memlock']}B"
    if raw.type == MapType.PROG_ARRAY and ("owner_prog_type" in fdinfo or "owner_jited" in fdinfo):
        text += "\n\t"
        if "owner_prog_type" in fdinfo:
            owner = _type_name(int(fdinfo["owner_prog_type"]), ProgramType)
            text += f"owner_prog_type {owner}  "
        if "owner_jited" in fdinfo:
            text += "owner jited" if int(fdinfo["owner_jited"]) else "owner not jited"
    frozen = int(fdinfo.get("frozen", "0"))
    if raw.btf_id or frozen:
        text += "\n\t"
    if raw.btf_id:
        text += f"btf_id {raw.btf_id}"
    if frozen:
        text += "  frozen" if raw.btf_id else "frozen"
    ctx.write(text + "\n")


@verb("map", "show", "list", usage="[MAP]", default=True)
def show(ctx: Context, words: Words) -> None:
    """Show every map, or the maps MAP names: type, name, flags, sizes, memlock, btf_id, frozen."""
    show_one = _show_json if ctx.json else _show_text
    if words:
        fds = map_fds(words, readonly=True)
        with closing(fds):
            words.end()
            if ctx.json and len(fds) > 1:
                ctx.jw.start_array()
            for fd in fds:
                show_one(ctx, fd)
            if ctx.json and len(fds) > 1:
                ctx.jw.end_array()
        return
    from .._sys.constants import Cmd

    if ctx.json:
        ctx.jw.start_array()
    for fd in commands.each_fd(Cmd.MAP_GET_NEXT_ID, Cmd.MAP_GET_FD_BY_ID, "map"):
        with closing([fd]):
            show_one(ctx, fd)
    if ctx.json:
        ctx.jw.end_array()


# ---- dump and lookup --------------------------------------------------------------------------

def _plain_entry(raw: MapInfoStruct, key: bytes, value: bytes | list[bytes]) -> str:
    """bpftool's ``print_entry_plain``."""
    if isinstance(value, list):
        text = f"key:\n{hex_words(key)}\n" if raw.key_size else ""
        gap = "\n" if raw.value_size > 16 else " "
        return text + "".join(f"value (CPU {cpu:02d}):{gap}{hex_words(v)}\n" for cpu, v in enumerate(value))
    break_names = raw.key_size > 16 or raw.value_size > 16
    single_line = raw.key_size + raw.value_size <= 24 and not break_names
    gap = "\n" if break_names else " "
    text = f"key:{gap}{hex_words(key)}" + ("  " if single_line else "\n") if raw.key_size else ""
    if raw.value_size:
        if raw.type in _MAP_OF_MAPS:
            text += f"inner_map_id:{gap}{int.from_bytes(value[:4], sys.byteorder)} "
        else:
            text += f"value:{gap}{hex_words(value)}"
    return text + "\n"


def _json_entry(jw: JsonWriter, raw: MapInfoStruct, key: bytes, value: bytes | list[bytes], formatted: dict[str, Any] | None) -> None:
    """bpftool's ``print_entry_json``."""
    entry: dict[str, Any] = {"key": _hex_json(key)}
    if isinstance(value, list):
        entry["values"] = [{"cpu": cpu, "value": _hex_json(v)} for cpu, v in enumerate(value)]
    else:
        entry["value"] = _hex_json(value)
        if raw.type in _MAP_OF_MAPS:
            entry["inner_map_id"] = int.from_bytes(value[:4], sys.byteorder)
    if formatted is not None:
        entry["formatted"] = formatted
    jw.value(entry)


def _error_entry(ctx: Context, raw: MapInfoStruct, key: bytes, code: int) -> None:
    """bpftool's ``print_entry_error``: the key and why its value could not be read."""
    if raw.type in _MAP_OF_MAPS | {MapType.PROG_ARRAY} and code == errno.ENOENT:
        return
    if ctx.json:
        ctx.jw.value({"key": _hex_json(key), "value": {"error": os.strerror(code)}})
        return
    message = "<no entry>" if code == errno.ENOENT else os.strerror(code)
    break_names = raw.key_size > 16 or len(message) > 16
    single_line = raw.key_size + len(message) <= 24 and not break_names
    gap = "\n" if break_names else " "
    ctx.write(f"key:{gap}{hex_words(key)}" + ("  " if single_line else "\n") + f"value:{gap}{message}\n")


def _raw_value(m: Map, value: Any) -> bytes | list[bytes]:
    """The value's bytes as the kernel gave them: fd maps decode ids and cookies to ints."""
    if isinstance(value, int):
        return value.to_bytes(m.value_size, sys.byteorder)
    if isinstance(value, list):
        return [bytes(v) for v in value]
    return bytes(value)


def _keys(fd: int, raw: MapInfoStruct) -> Iterator[bytes]:
    """Every key once, as ``Map`` walks them (``map dump`` needs no ``Map``: it starts faster)."""
    if raw.key_size == 0:
        from .._sys.traits import map_type_name

        raise CommandError(f"map id {raw.id}: {map_type_name(raw.type)} maps have no keys to walk")
    from .._sys.elem import walk_keys

    name = raw.name.decode()
    yield from walk_keys(lambda prev: commands.map_next_key(fd, prev, raw.key_size, name), raw.max_entries)


def _looked_up(fd: int, raw: MapInfoStruct, key: bytes) -> bytes | list[bytes]:
    """The value's bytes as the kernel gives them; a per-CPU map's, one per possible CPU."""
    from .._sys.cpus import possible_cpus
    from .._sys.traits import map_traits  # here: ``map show`` does not need the tables

    traits = map_traits(raw.type)
    if traits is None or not traits.percpu:
        return commands.map_lookup(fd, key, raw.value_size, raw.name.decode())
    stride = (raw.value_size + 7) & ~7
    values = commands.map_lookup(fd, key, stride * possible_cpus(), raw.name.decode())
    return [values[i: i + raw.value_size] for i in range(0, len(values), stride)]


def _open_map(fd: int, readonly: bool) -> Map:
    """A ``Map`` for ``fd`` (a duplicate: the caller still closes ``fd``)."""
    from ..map import Map

    return Map.from_fd(fd, readonly=readonly, typed=False)  # the dump shows bytes and formats them itself


def _dump_one(ctx: Context, fd: int, jw: JsonWriter | None, header: bool) -> None:
    """bpftool's ``map_dump``: every element, streamed; ``jw`` is the JSON or BTF-text writer."""
    raw = commands.map_info(fd)
    formatter = Formatter(raw) if jw is not None else None
    if jw is not None:
        if header:
            jw.start_object()
            for name, item in _header(raw).items():
                jw.field(name, item)
            jw.name("elements")
        jw.start_array()
    elif header:
        ctx.write(_header_text(raw))
    count = 0
    for key in _keys(fd, raw):
        try:
            value = _looked_up(fd, raw, key)
        except BPFError as err:
            _error_entry(ctx, raw, key, err.errno or errno.EIO)
            continue
        count += 1
        formatted = formatter(key, value) if formatter is not None else None
        if ctx.json:
            _json_entry(ctx.jw, raw, key, value, formatted)
        elif formatted is not None and jw is not None:
            jw.value(formatted)
        else:  # bpftool prints plain lines even inside the BTF block when the map has no value type
            ctx.write(_plain_entry(raw, key, value))
    if jw is not None:
        jw.end_array()
        if header:
            jw.end_object()
    else:
        ctx.write(f"Found {count} element{'s' if count != 1 else ''}\n")


@verb("map", "dump", usage="MAP")
def dump(ctx: Context, words: Words) -> None:
    """Print every element of the map(s): bytes, and the values decoded by the map's BTF when it has
    BTF (as bpftool prints them: a block of JSON-like text; under --json in 'formatted')."""
    fds = map_fds(words, readonly=True)
    with closing(fds):
        words.end()
        jw: JsonWriter | None = None
        if ctx.json:
            jw = ctx.jw
        elif all(commands.map_info(fd).btf_id for fd in fds):
            jw = JsonWriter(ctx.write, pretty=True)
        if jw is not None and len(fds) > 1:
            jw.start_array()
        for i, fd in enumerate(fds):
            _dump_one(ctx, fd, jw, header=len(fds) > 1)
            if jw is None and i != len(fds) - 1:
                ctx.write("\n")
        if jw is not None and len(fds) > 1:
            jw.end_array()
        if jw is not None and not ctx.json:
            jw.finish()


def _key(words: Words, key_size: int) -> bytes:
    """``key DATA`` (bpftool lets a map without keys omit it)."""
    if key_size == 0 and not words:
        return b""
    words.expect("key")
    return words.data(key_size, "key")


def _where(map_name: str, map_id: int, key: bytes) -> str:
    name = f"map '{map_name}' (id {map_id})" if map_name else f"map id {map_id}"
    return f"{name}: key {hex_words(key).replace(chr(10), ' ')}" if key else name


@verb("map", "lookup", usage="MAP [key DATA]")
def lookup(ctx: Context, words: Words) -> int:
    """Print the value at a key (exit status 254 when the key is not in the map, as bpftool's)."""
    fd = map_fd(words, readonly=True)
    with closing([fd]), _open_map(fd, readonly=True) as m:
        key = _key(words, m.key_size)
        words.end()
        raw = commands.map_info(fd)
        try:
            value = _raw_value(m, m.lookup(key))
        except KeyNotFoundError:
            if ctx.json:
                ctx.emit(None)
                return STATUS_NOT_FOUND
            raise CommandError(f"lookup in {_where(m.name, m.id, key)}: not found", STATUS_NOT_FOUND) from None
        formatted = Formatter(raw)(key, value)
        if ctx.json:
            _json_entry(ctx.jw, raw, key, value, formatted)
        elif formatted is not None:
            jw = JsonWriter(ctx.write, pretty=True)
            jw.value(formatted)
            jw.finish()
        else:
            ctx.write(_plain_entry(raw, key, value))
    return 0


_FLAGS = ("any", "noexist", "exist")


@verb("map", "update", usage="MAP key DATA value VALUE [UPDATE_FLAGS]")
def update(ctx: Context, words: Words) -> None:
    """Set the value at a key; a map of maps takes a MAP as the value, a program array a PROG."""
    from .._sys.constants import UpdateFlags

    fd = map_fd(words)
    with closing([fd]), _open_map(fd, readonly=False) as m:
        key = _key(words, m.key_size)
        words.expect("value")
        if m.type in _SOCKET_VALUED:
            raise UsageError(f"{_type_name(m.type, MapType)} values are sockets: use the Python API")
        inner: Any = None
        if m.type in _MAP_OF_MAPS:
            inner_fd = map_fd(words)
            with closing([inner_fd]):
                inner = _open_map(inner_fd, readonly=False)
        elif m.type == MapType.PROG_ARRAY:
            progs = prog_fds(words)
            with closing(progs):
                if len(progs) > 1:
                    raise UsageError(f"{len(progs)} programs match: name one by 'id PROG_ID'")
                from ..programs import Program

                inner = Program.from_fd(progs[0])
        value: Any = inner if inner is not None else words.data(m.value_size, "value")
        flag = words.take("UPDATE_FLAGS") if words else "any"
        if flag not in _FLAGS:
            raise UsageError(f"unexpected '{flag}' (UPDATE_FLAGS is any, exist or noexist)")
        words.end()
        try:
            m.update(key, value, UpdateFlags[flag.upper()])
        finally:
            if inner is not None:
                inner.close()
    if ctx.json:
        ctx.emit(None)


@verb("map", "delete", usage="MAP key DATA")
def delete(ctx: Context, words: Words) -> int:
    """Remove the element at a key (exit status 254 when the key is not in the map, as bpftool's)."""
    fd = map_fd(words)
    with closing([fd]), _open_map(fd, readonly=False) as m:
        words.expect("key")
        key = words.data(m.key_size, "key")
        words.end()
        try:
            m.delete(key)
        except KeyNotFoundError:
            raise CommandError(f"delete in {_where(m.name, m.id, key)}: not found", STATUS_NOT_FOUND) from None
    if ctx.json:
        ctx.emit(None)
    return 0


@verb("map", "pin", usage="MAP FILE")
def pin(ctx: Context, words: Words) -> None:
    """Pin the map at FILE in bpffs."""
    fd = map_fd(words)
    with closing([fd]):
        path = words.take("a pin path")
        words.end()
        commands.obj_pin(fd, path, what="map")
    if ctx.json:
        ctx.emit(None)


@verb("map", "freeze", usage="MAP")
def freeze(ctx: Context, words: Words) -> None:
    """Make the map read-only for user space (programs may still write it)."""
    fd = map_fd(words)
    with closing([fd]):
        words.end()
        commands.map_freeze(fd)
    if ctx.json:
        ctx.emit(None)


_CREATE = {"type": "type", "key": "key_size", "value": "value_size", "entries": "max_entries", "name": "name",
           "flags": "flags", "extra": "map_extra", "numa": "numa_node"}


@verb("map", "create", usage="FILE type TYPE key KEY_SIZE value VALUE_SIZE entries MAX_ENTRIES [name NAME] "
      "[flags FLAGS] [extra EXTRA] [numa NODE]")
def create(ctx: Context, words: Words) -> None:
    """Create a map and pin it at FILE."""
    from .._sys.constants import MapFlags
    from ..map import Map, MapSpec

    path = words.take("a pin path")
    fields: dict[str, Any] = {"flags": 0}
    while words:
        word = words.take("an attribute")
        if word not in _CREATE:
            raise UsageError(f"unknown attribute '{word}' (expected one of {', '.join(_CREATE)})")
        if _CREATE[word] in fields and word != "flags":
            raise UsageError(f"'{word}' given twice")
        if word == "type":
            text = words.take("a map type")
            try:
                fields["type"] = MapType[text.upper()]
            except KeyError:
                raise UsageError(f"unknown map type '{text}'") from None
        elif word == "name":
            fields["name"] = words.take("a map name")
        else:
            fields[_CREATE[word]] = words.integer(word, 0, 2**64 - 1 if word in ("flags", "extra") else 2**32 - 1)
    if "type" not in fields:
        raise UsageError("'type' is required")
    fields["flags"] = MapFlags(fields["flags"])
    with Map.create(MapSpec(**fields)) as m:
        m.pin(path)
    if ctx.json:
        ctx.emit(None)
