"""Where a uprobe goes: a function symbol of an ELF executable or shared library turned into the
file offset the kernel's uprobe PMU wants (as libbpf's ``elf_find_func_offset``), with pyelftools.

The symbol's address is translated through the program header: offset = address - the loadable
segment's ``p_vaddr`` + its ``p_offset``, which is right for PIE and non-PIE executables and for
shared libraries alike. ``.symtab`` is searched first, then ``.dynsym``; a versioned name
(``malloc@@GLIBC_2.2.5``) matches its bare name. ``func+0x10`` adds an offset.
"""

from __future__ import annotations

import os
import re
import shutil

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.@$]+)(?:\+(?P<offset>0[xX][0-9a-fA-F]+|\d+))?$")
_FUNC_TYPES = ("STT_FUNC", "STT_GNU_IFUNC")
_LIB_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
             "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu")


class SymbolNotFoundError(ValueError, LookupError):
    """The binary has no function of that name (or it is only imported, not defined there)."""


def resolve_binary(path: str | os.PathLike[str]) -> str:
    """The absolute path of a binary: as given if it has a slash; a library name is looked up in
    ``LD_LIBRARY_PATH`` and the usual library directories, a program name in ``PATH``."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\0" in text:
        raise ValueError(f"binary path must be a non-empty path, not {path!r}")
    if "/" in text:
        found = text
    elif ".so" in text:
        dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d] + list(_LIB_DIRS)
        found = next((os.path.join(d, text) for d in dirs if os.path.isfile(os.path.join(d, text))), "")
        if not found:
            raise FileNotFoundError(f"no shared library {text!r} in LD_LIBRARY_PATH or {', '.join(_LIB_DIRS)}")
    else:
        found = shutil.which(text) or ""
        if not found:
            raise FileNotFoundError(f"no program {text!r} in PATH")
    if not os.path.isfile(found):
        raise FileNotFoundError(f"{found}: no such file")
    return os.path.abspath(found)


def parse_symbol(symbol: str) -> tuple[str, int]:
    """``name`` or ``name+offset`` -> ``(name, offset)``."""
    if not isinstance(symbol, str):
        raise TypeError(f"symbol must be a str (a function name, optionally +offset), not {symbol!r}")
    match = _SPEC.match(symbol)
    if match is None:
        raise ValueError(f"symbol {symbol!r}: expected a function name, optionally followed by +OFFSET")
    return match["name"], int(match["offset"] or "0", 0)


def function_offset(path: str, symbol: str) -> int:
    """The file offset of function ``symbol`` (``name`` or ``name+offset``) in the ELF file ``path``."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    name, extra = parse_symbol(symbol)
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            address, size = _find(elf, name, path)
            if extra and size and extra >= size:
                raise ValueError(f"{symbol!r}: offset {extra} is past the end of {name!r} ({size} bytes) in {path}")
            return _file_offset(elf, address, path, name) + extra
    except ELFError as err:
        raise ValueError(f"{path} is not an ELF file pybpf can read: {err}") from None


def _find(elf: object, name: str, path: str) -> tuple[int, int]:
    """``(address, size)`` of the defined function ``name``."""
    searched = []
    for table in (".symtab", ".dynsym"):
        section = elf.get_section_by_name(table)  # type: ignore[attr-defined]
        if section is None:
            continue
        searched.append(table)
        for sym in section.iter_symbols():
            sym_name = sym.name.split("@", 1)[0]
            if sym_name != name or sym["st_info"]["type"] not in _FUNC_TYPES or sym["st_shndx"] == "SHN_UNDEF":
                continue
            if sym["st_value"] == 0:
                continue
            return int(sym["st_value"]), int(sym["st_size"])
    where = " and ".join(searched) if searched else "no symbol table (stripped)"
    raise SymbolNotFoundError(f"no function {name!r} defined in {path} (searched {where})")


def _file_offset(elf: object, address: int, path: str, name: str) -> int:
    for segment in elf.iter_segments():  # type: ignore[attr-defined]
        if segment["p_type"] != "PT_LOAD":
            continue
        start, length = segment["p_vaddr"], segment["p_memsz"]
        if start <= address < start + length:
            return int(address - start + segment["p_offset"])
    raise ValueError(f"function {name!r} at {address:#x} is in no loadable segment of {path}")
