"""A map's keys and values decoded by its BTF, shaped as bpftool's ``formatted``; bounded.

The decoding itself is ``pybpf.btf.typed.format_value``; this module decides what bpftool
shows (the key only when the map has a key type, per-CPU values as ``{"cpu", "value"}``) and
refuses a type that would expand without bound before anything is printed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .words import CommandError

if TYPE_CHECKING:
    from .._sys.attrs import MapInfoStruct


FORMAT_BOUND = 1 << 20
"""The most items (numbers, strings, members) one formatted key or value may expand to: a hostile
BTF type (an array of 2**32 empty structs fits in 4 bytes) would otherwise hang the dump."""


def _items(btf: Any, type_id: int, bound: int, depth: int = 0) -> int:
    """How many items formatting ``type_id`` prints, counted up to just past ``bound``."""
    from ..btf import Array, Struct, Union

    t = btf.resolve(type_id)
    if depth > 32:
        return bound + 1
    if isinstance(t, Array):
        element = _items(btf, t.type, bound, depth + 1)
        return 1 + min(t.nelems * max(element, 1), bound + 1)
    if isinstance(t, Struct | Union):
        total = 1
        for member in t.members:
            total += _items(btf, member.type, bound, depth + 1)
            if total > bound:
                break
        return total
    return 1


class Formatter:
    """A map's keys and values decoded by its BTF, as bpftool's ``formatted`` (None without BTF).

    BTF is imported only for a map that has it (``map dump`` of a plain map stays light)."""

    def __init__(self, raw: MapInfoStruct) -> None:
        self.key_id = raw.btf_key_type_id
        self.value_id = raw.btf_vmlinux_value_type_id or raw.btf_value_type_id
        self.btf: Any = None
        if raw.btf_vmlinux_value_type_id:
            from ..btf import vmlinux

            self.btf = vmlinux()
        elif raw.btf_value_type_id:
            from ..btf import BtfHandle

            with BtfHandle.from_id(raw.btf_id) as handle:
                self.btf = handle.btf()
        if self.btf is not None:
            for type_id in (self.key_id, self.value_id):
                if type_id and _items(self.btf, type_id, FORMAT_BOUND) > FORMAT_BOUND:
                    raise CommandError(f"map id {raw.id}: its BTF type [{type_id}] expands to over {FORMAT_BOUND:,} "
                                       "items per element (huge arrays): refusing to format it")

    def __call__(self, key: bytes, value: bytes | list[bytes]) -> dict[str, Any] | None:
        if self.btf is None:
            return None
        from ..btf.typed import format_value

        shown: dict[str, Any] = {}
        if self.key_id:
            shown["key"] = format_value(self.btf, self.key_id, key)
        if isinstance(value, list):
            shown["values"] = [{"cpu": cpu, "value": format_value(self.btf, self.value_id, v)} for cpu, v in enumerate(value)]
        else:
            shown["value"] = format_value(self.btf, self.value_id, value)
        return shown
