"""Externs resolved at load, as libbpf does: ``__kconfig`` values from the kernel's configuration
(``/proc/config.gz``, ``/boot/config-$(uname -r)`` or a path given) and ``LINUX_KERNEL_VERSION``;
``__ksym`` kernel variables (typed: by their vmlinux BTF id; untyped: their address from
``/proc/kallsyms``) and kernel functions (kfuncs, by BTF id). A weak extern the kernel lacks
reads as 0 (a weak kfunc's call is poisoned: the verifier refuses it only where reachable).
"""

from __future__ import annotations

import ctypes
import gzip
import os
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence

from .asm.insn import CALL, PSEUDO_BTF_ID, PSEUDO_KFUNC_CALL
from .asm.patch import set_imm, set_imm64, set_off, set_src
from .btf import BTF, Array, Enum, Func, Int, IntEncoding, Var
from .btf.core import POISON, kernel_targets, types_compat
from .btf.typed import layout
from .elf.btf import Extern
from .programs.spec import ExternReference

KALLSYMS = "/proc/kallsyms"
MAX_CONFIG_BYTES = 16 << 20
"""The most bytes of a kernel configuration read (a real one is about 300 KiB)."""

_AT_SYSINFO_EHDR = 33
_ADDRESSES: dict[str, int] = {}  # kallsyms addresses found, per process (the core kernel's do not move)


class ExternError(ValueError):
    """An extern the running kernel cannot satisfy; the message names it and what was looked at."""


def kernel_version_code() -> int:
    """``LINUX_VERSION_CODE`` of the running kernel: from the vDSO's ``Linux`` note (exact, as
    cilium/ebpf reads it), else from the release string (``KERNEL_VERSION(a, b, c)``)."""
    found = _vdso_version()
    if found:
        return found
    release = os.uname().release
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in release.split("-")[0].split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0] << 16 | parts[1] << 8 | min(parts[2], 255)


def _vdso_version() -> int:
    try:
        with open("/proc/self/auxv", "rb") as f:
            auxv = f.read(4096)
    except OSError:
        return 0
    base = 0
    for key, value in struct.iter_unpack("=QQ", auxv[: len(auxv) // 16 * 16]):
        if key == _AT_SYSINFO_EHDR:
            base = value
            break
    if not base:
        return 0
    header = ctypes.string_at(base, 64)
    if header[:4] != b"\x7fELF" or header[4] != 2:
        return 0
    phoff, = struct.unpack_from("=Q", header, 32)
    phentsize, phnum = struct.unpack_from("=HH", header, 54)
    for i in range(min(phnum, 64)):
        phdr = ctypes.string_at(base + phoff + i * phentsize, 56)
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("=IIQQQQ", phdr)
        if p_type != 4:  # PT_NOTE
            continue
        notes = ctypes.string_at(base + p_offset, min(p_filesz, 4096))
        at = 0
        while at + 12 <= len(notes):
            namesz, descsz, note_type = struct.unpack_from("=III", notes, at)
            name = notes[at + 12 : at + 12 + namesz].rstrip(b"\0")
            desc_at = at + 12 + (namesz + 3) // 4 * 4
            if name == b"Linux" and note_type == 0 and descsz >= 4:
                return int(struct.unpack_from("=I", notes, desc_at)[0])
            at = desc_at + (descsz + 3) // 4 * 4
    return 0


def read_kernel_config(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``CONFIG_*`` -> value (``y``, ``m``, ``n``, a number or a quoted string) of the running
    kernel, or of the file at ``path`` (gzip or plain); empty when none is found."""
    candidates = [os.fspath(path)] if path is not None else ["/proc/config.gz", f"/boot/config-{os.uname().release}"]
    for candidate in candidates:
        try:
            with open(candidate, "rb") as f:
                raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError:
            if path is not None:
                raise
            continue
        if raw[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=__import__("io").BytesIO(raw)) as unzipped:
                raw = unzipped.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ExternError(f"{candidate}: larger than {MAX_CONFIG_BYTES} bytes: not a kernel configuration")
        return _parse_config(raw.decode("utf-8", "replace"))
    return {}


def _parse_config(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[2:-len(" is not set")]] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def kconfig_data(externs: Iterable[Extern], btf: BTF, size: int, path: str | os.PathLike[str] | None = None) -> bytes:
    """The ``.kconfig`` map's value: every ``__kconfig`` extern's value at its offset."""
    wanted = [e for e in externs if e.section == ".kconfig"]
    data = bytearray(size)
    config: dict[str, str] | None = None
    for extern in wanted:
        if extern.name == "LINUX_KERNEL_VERSION":
            raw = _encode_config(extern, btf, str(kernel_version_code()))
        else:
            if config is None:
                config = read_kernel_config(path)
            value = config.get(extern.name)
            if value is None:
                if not extern.weak:
                    where = os.fspath(path) if path is not None else "/proc/config.gz or /boot/config-" + os.uname().release
                    raise ExternError(f"__kconfig extern {extern.name!r} is not in the kernel configuration ({where}); declare it __weak to read 0")
                continue
            raw = _encode_config(extern, btf, value)
        data[extern.offset : extern.offset + len(raw)] = raw
    return bytes(data)


def _encode_config(extern: Extern, btf: BTF, value: str) -> bytes:
    t = btf.resolve(extern.type_id)
    name = extern.name
    if isinstance(t, Int) and t.encoding & IntEncoding.BOOL:
        if value not in ("y", "n"):
            raise ExternError(f"__kconfig {name!r} is a bool but the configuration says {value!r}")
        return bytes([value == "y"]) + bytes(t.size - 1)
    if isinstance(t, Int) and t.size == 1 and (t.encoding & IntEncoding.CHAR or t.name == "char") and value in ("y", "m", "n"):
        return value.encode()
    if isinstance(t, Enum) and value in ("y", "m", "n"):  # enum libbpf_tristate
        number = {"n": 0, "y": 1, "m": 2}[value]
        return number.to_bytes(t.size, sys.byteorder)
    if isinstance(t, Array):
        if not (len(value) >= 2 and value[0] == value[-1] == '"'):
            raise ExternError(f"__kconfig {name!r} is a char array but the configuration says {value!r}")
        text = value[1:-1].encode()
        if len(text) >= t.nelems:
            raise ExternError(f"__kconfig {name!r}: {value} does not fit in char[{t.nelems}]")
        return text + bytes(t.nelems - len(text))
    if isinstance(t, Int | Enum):
        try:
            number = int(value, 0)
        except ValueError:
            raise ExternError(f"__kconfig {name!r} is an integer but the configuration says {value!r}") from None
        try:
            return layout(btf, t.id).encode(number, f"__kconfig {name!r}")
        except ValueError as err:
            raise ExternError(str(err)) from None
    raise ExternError(f"__kconfig {name!r} has type {t.describe()}, which pybpf cannot fill from the configuration")


def _kallsyms(names: set[str]) -> dict[str, int]:
    """Addresses of ``names`` in ``/proc/kallsyms`` (0 where hidden by kptr_restrict), found by
    searching the whole text once per name rather than splitting its ~200k lines."""
    found = {name: _ADDRESSES[name] for name in names if name in _ADDRESSES}
    missing = names - found.keys()
    if not missing:
        return found
    try:
        with open(KALLSYMS, "rb") as f:
            data = f.read()
    except OSError:
        return found
    for name in missing:
        raw = name.encode()
        for end in (b"\n", b"\t"):
            at = data.find(b" " + raw + end)
            while at >= 0:
                start = data.rfind(b"\n", 0, at) + 1
                fields = data[start:at].split()
                if len(fields) == 2 and len(fields[1]) == 1:
                    found[name] = int(fields[0], 16)
                    break
                at = data.find(b" " + raw + end, at + 1)
            if name in found:
                _ADDRESSES[name] = found[name]
                break
    return found


def resolve(code: bytearray, refs: Sequence[ExternReference], externs: Mapping[str, Extern], btf: BTF, program: str) -> None:
    """Point each ``__ksym`` reference of ``code`` at the running kernel's symbol (in place)."""
    if not refs:
        return
    untyped = {r.name for r in refs if not r.function and not externs[r.name].type_id}
    addresses = _kallsyms(untyped)
    kernel = kernel_targets().base
    for ref in refs:
        extern = externs[ref.name]
        where = f"program {program!r} instruction {ref.insn}"
        if ref.function:
            found = [t for t in kernel.find(ref.name, Func)]
            if not found:
                if not extern.weak:
                    raise ExternError(f"{where}: kernel function {ref.name!r} (__ksym) is not in the running kernel's BTF")
                if ref.call:  # reachable only if the program skips its bpf_ksym_exists() check
                    code[ref.insn * 8 : ref.insn * 8 + 8] = bytes(8)
                    code[ref.insn * 8] = CALL
                    set_imm(code, ref.insn, POISON)
                else:
                    set_src(code, ref.insn, 0)
                    set_imm64(code, ref.insn, 0)
                continue
            if ref.call:
                set_src(code, ref.insn, PSEUDO_KFUNC_CALL)
                set_imm(code, ref.insn, found[0].id)
                set_off(code, ref.insn, 0)
            else:
                set_src(code, ref.insn, PSEUDO_BTF_ID)
                set_imm(code, ref.insn, found[0].id)
                set_imm(code, ref.insn + 1, 0)
        elif extern.type_id:
            var = [t for t in kernel.find(ref.name, Var) if isinstance(t, Var)]
            if not var:
                if not extern.weak:
                    raise ExternError(f"{where}: kernel variable {ref.name!r} (__ksym) is not in the running kernel's BTF (only per-CPU variables are)")
                set_src(code, ref.insn, 0)
                set_imm64(code, ref.insn, 0)
                continue
            if not types_compat(btf, extern.type_id, kernel, var[0].type):
                raise ExternError(f"{where}: __ksym {ref.name!r}: its declared type differs from the kernel's {kernel.resolve(var[0].type).describe()}")
            set_src(code, ref.insn, PSEUDO_BTF_ID)
            set_imm(code, ref.insn, var[0].id)
            set_imm(code, ref.insn + 1, 0)
        else:
            address = addresses.get(ref.name)
            if address is None and not extern.weak:
                raise ExternError(f"{where}: kernel symbol {ref.name!r} (__ksym) is not in {KALLSYMS}")
            if address == 0 and ref.name in addresses:
                raise ExternError(f"{where}: {KALLSYMS} hides the address of {ref.name!r} (kernel.kptr_restrict)")
            set_src(code, ref.insn, 0)
            set_imm64(code, ref.insn, address or 0)
