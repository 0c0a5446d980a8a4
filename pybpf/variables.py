"""Global variables of an object (``.data``, ``.rodata``, ``.bss`` and their ``.name`` variants),
by name, as libbpf skeletons and cilium's ``Variables`` expose them.

Before load, ``CollectionSpec.variables[name] = value`` writes the initial value into the data
map's contents (checked against the variable's BTF type: size and range). After load,
``Collection.variables[name]`` reads and writes the live value through the map's memory
mapping; ``.rodata`` is frozen at load and reads only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from .btf import BTF, Datasec, Var
from .btf.typed import Layout, layout
from .map import Map, MapSpec


@dataclasses.dataclass(frozen=True)
class Variable:
    """Where a global variable lives: its data section (a map of the collection), byte offset,
    size and BTF type id."""

    name: str
    section: str
    offset: int
    size: int
    type_id: int


def find_variables(btf: BTF, sections: Mapping[str, Any]) -> dict[str, Variable]:
    """Every named variable of the data sections in ``sections`` (map names), from ``btf``."""
    found: dict[str, Variable] = {}
    for section in sections:
        if section == ".kconfig":
            continue  # externs, filled from the kernel's configuration
        for datasec in btf.find(section, Datasec):
            assert isinstance(datasec, Datasec)
            for info in datasec.vars:
                var = btf.type_by_id(info.type)
                if isinstance(var, Var) and var.name and var.name not in found:
                    found[var.name] = Variable(var.name, section, info.offset, info.size, var.type)
    return found


class _Named(MutableMapping[str, Any]):
    """A mapping over the global variables of ``btf`` found in ``sections``."""

    def __init__(self, btf: BTF, sections: Mapping[str, Any]) -> None:
        self._btf = btf
        self._vars = find_variables(btf, sections)

    def _variable(self, name: str) -> Variable:
        var = self._vars.get(name)
        if var is None:
            raise KeyError(f"no global variable {name!r} (known: {', '.join(sorted(self._vars)) or 'none'})")
        return var

    def __delitem__(self, name: str) -> None:
        raise TypeError("global variables cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(self._vars)

    def __len__(self) -> int:
        return len(self._vars)

    def __repr__(self) -> str:
        return f"<variables {sorted(self._vars)}>"


class VariableSpecs(_Named):
    """``CollectionSpec.variables``: initial values of global variables, edited before load."""

    def __init__(self, btf: BTF, maps: dict[str, MapSpec]) -> None:
        """Variables of ``btf`` whose sections are among ``maps``."""
        super().__init__(btf, maps)
        self._maps = maps

    def _layout(self, name: str) -> tuple[Variable, Layout]:
        var = self._variable(name)
        return var, layout(self._btf, var.type_id)

    def _data(self, var: Variable) -> bytearray:
        spec = self._maps[var.section]
        data = bytearray(spec.value_size or 0)
        for key, value in spec.contents:
            if key == 0 and isinstance(value, bytes | bytearray):
                data[: len(value)] = value
        return data

    def __getitem__(self, name: str) -> Any:
        var, found = self._layout(name)
        return found.decode(self._data(var)[var.offset : var.offset + var.size])

    def __setitem__(self, name: str, value: Any) -> None:
        var, found = self._layout(name)
        raw = found.encode(value, f"variable {name!r}")
        if len(raw) != var.size:
            raise ValueError(f"variable {name!r} is {var.size} bytes; its type says {len(raw)}")
        data = self._data(var)
        data[var.offset : var.offset + var.size] = raw
        self._maps[var.section].contents = ((0, bytes(data)),)



class Variables(_Named):
    """``Collection.variables``: the live global variables, through the data maps' memory."""

    def __init__(self, btf: BTF, maps: dict[str, Map]) -> None:
        """Variables of ``btf`` whose sections are loaded as ``maps``."""
        super().__init__(btf, maps)
        self._maps = maps

    def _view(self, name: str) -> tuple[memoryview, Variable, Layout]:
        var = self._variable(name)
        view = self._maps[var.section].mmap()
        return view[var.offset : var.offset + var.size], var, layout(self._btf, var.type_id)

    def __getitem__(self, name: str) -> Any:
        view, _, found = self._view(name)
        return found.decode(view)

    def __setitem__(self, name: str, value: Any) -> None:
        view, var, found = self._view(name)
        if view.readonly:
            raise PermissionError(f"variable {name!r} is in {var.section}, which is read-only after load")
        view[:] = found.encode(value, f"variable {name!r}")

