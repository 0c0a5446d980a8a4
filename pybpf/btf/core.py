"""CO-RE: relocating a program's field offsets, sizes, type and enum facts to the running kernel.

Each ``CoreRelo`` of ``.BTF.ext`` names a local type (from the object's BTF), an access string
(``0:1:2``: member and array indices from the root) and a kind. As libbpf's ``relo_core.c``
does, the local access is matched against every target type of the same essential name (the
name up to a ``___flavor`` suffix) and kind; all matching candidates must agree on the value;
the instruction is then patched (an ``ALU`` immediate, a load/store offset and size, or an
``ld_imm64``). A relocation no candidate satisfies poisons its instruction (a call to the
helper ``0xbad2310``) so that the verifier refuses it only if the code is reachable; existence
checks (``bpf_core_field_exists`` and friends) simply become 0. Pure computation over BTF: no
syscalls.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence

from ..asm.insn import CALL, LD_IMM64, Class
from ..asm.patch import INSN_SIZE, code_at, imm_at, off_at, regs_at, set_imm, set_imm64, set_off
from ..errors import BTFError
from .ext import CoreRelo, CoreReloKind
from .spec import BTF
from .types import (
    Array,
    Enum,
    Enum64,
    Float,
    Fwd,
    FuncProto,
    Int,
    IntEncoding,
    Kind,
    Pointer,
    Struct,
    Type,
    Union,
)

POISON = 0xBAD2310
"""The helper id a poisoned instruction calls: the verifier says ``invalid func unknown#195896080``."""

MAX_SPEC_LEN = 64
"""``BPF_CORE_SPEC_MAX_LEN``: the deepest access string followed."""

_MAX_DEPTH = 32
_FLAVORED = re.compile(rb"[^\0]*[^_\0]___[^_\0][^\0]*")
_FIELD_KINDS = {
    CoreReloKind.FIELD_BYTE_OFFSET, CoreReloKind.FIELD_BYTE_SIZE, CoreReloKind.FIELD_EXISTS, CoreReloKind.FIELD_SIGNED,
    CoreReloKind.FIELD_LSHIFT_U64, CoreReloKind.FIELD_RSHIFT_U64,
}
_TYPE_KINDS = {CoreReloKind.TYPE_ID_LOCAL, CoreReloKind.TYPE_ID_TARGET, CoreReloKind.TYPE_EXISTS, CoreReloKind.TYPE_SIZE, CoreReloKind.TYPE_MATCHES}
_ENUM_KINDS = {CoreReloKind.ENUMVAL_EXISTS, CoreReloKind.ENUMVAL_VALUE}
_EXISTS_KINDS = {CoreReloKind.FIELD_EXISTS, CoreReloKind.TYPE_EXISTS, CoreReloKind.TYPE_MATCHES, CoreReloKind.ENUMVAL_EXISTS}
_SIZE_FIELD = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}
_SIZE_CODE = {4: 0x00, 2: 0x08, 1: 0x10, 8: 0x18}


class CoreError(ValueError):
    """A CO-RE relocation that cannot be applied at all (malformed, ambiguous or mismatched with
    its instruction); the message names the program, instruction, type and access."""


def essential_name(name: str) -> str:
    """``name`` without its ``___flavor`` suffix (``task_struct___old`` -> ``task_struct``)."""
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1 : i + 4] == "___" and name[i + 4] != "_":
            return name[: i + 1]
    return name


def _any_enum(t: Type) -> bool:
    return isinstance(t, Enum | Enum64)


def _core_kind(t: Type) -> Kind:
    return Kind.ENUM if isinstance(t, Enum64) else t.kind


@dataclasses.dataclass
class _Accessor:
    type_id: int
    index: int
    name: str | None


@dataclasses.dataclass
class _Spec:
    """A parsed access: high-level accessors (named members, array indices), raw indices, bit offset."""

    btf: BTF
    root: int
    kind: CoreReloKind
    accessors: list[_Accessor] = dataclasses.field(default_factory=list)
    raw: list[int] = dataclasses.field(default_factory=list)
    bit_offset: int = 0

    def describe(self) -> str:
        """``struct task_struct.real_parent->...`` style text for messages."""
        root = self.btf.type_by_id(self.root)
        text = f"{root.kind.name.lower()} {root.name or '(anon)'}"
        if self.kind in _ENUM_KINDS and self.accessors:
            return f"{text}::{self.accessors[0].name}"
        for i, acc in enumerate(self.accessors):
            if acc.name:
                text += f".{acc.name}"
            elif i > 0 or acc.index:
                text += f"[{acc.index}]"
        return text


def _is_flex(btf: BTF, parent: _Accessor | None, array: Array) -> bool:
    if parent is None or parent.name is None or array.nelems:
        return False
    t = btf.type_by_id(parent.type_id)
    return isinstance(t, Struct | Union) and parent.index == len(t.members) - 1


def parse_spec(btf: BTF, type_id: int, access: str, kind: CoreReloKind) -> _Spec:
    """The local spec of a relocation (``bpf_core_parse_spec``); ``BTFError`` if malformed."""
    spec = _Spec(btf, type_id, kind)
    if kind in _TYPE_KINDS:
        if access != "0":
            raise BTFError(f"type relocation with access {access!r} (expected '0')")
        return spec
    try:
        spec.raw = [int(part) for part in access.split(":")]
    except ValueError:
        raise BTFError(f"malformed access string {access!r}") from None
    if not spec.raw or len(spec.raw) > MAX_SPEC_LEN or any(i < 0 for i in spec.raw):
        raise BTFError(f"access string {access!r} is empty, negative or too long")
    t = btf.resolve(type_id)
    first = spec.raw[0]
    spec.accessors.append(_Accessor(t.id, first, None))
    if kind in _ENUM_KINDS:
        if not isinstance(t, Enum | Enum64) or len(spec.raw) > 1 or first >= len(t.values):
            raise BTFError(f"enum relocation with access {access!r} on {t.describe()}")
        spec.accessors[0].name = t.values[first].name
        return spec
    if kind not in _FIELD_KINDS:
        raise BTFError(f"unknown relocation kind {int(kind)}")
    spec.bit_offset = first * btf.sizeof(t) * 8
    current = t.id
    for index in spec.raw[1:]:
        t = btf.resolve(current)
        if isinstance(t, Struct | Union):
            if index >= len(t.members):
                raise BTFError(f"access {access!r}: member {index} of {t.describe()} does not exist")
            member = t.members[index]
            spec.bit_offset += member.offset
            if member.name:
                spec.accessors.append(_Accessor(t.id, index, member.name))
            current = member.type
        elif isinstance(t, Array):
            element = btf.resolve(t.type)
            if not _is_flex(btf, spec.accessors[-1], t) and index >= t.nelems:
                raise BTFError(f"access {access!r}: index {index} past {t.nelems} elements")
            spec.accessors.append(_Accessor(element.id, index, None))
            spec.bit_offset += index * btf.sizeof(element) * 8
            current = element.id
        else:
            raise BTFError(f"access {access!r} goes into {t.describe()}, which has no members or elements")
    return spec


def _fields_compat(local: BTF, local_id: int, target: BTF, target_id: int) -> bool:
    for _ in range(_MAX_DEPTH):
        lt, tt = local.resolve(local_id), target.resolve(target_id)
        if isinstance(lt, Struct | Union) and isinstance(tt, Struct | Union):
            return True
        if _core_kind(lt) != _core_kind(tt):
            return False
        if isinstance(lt, Pointer | Float):
            return True
        if isinstance(lt, Fwd) or _any_enum(lt):
            ln, tn = essential_name(lt.name), essential_name(tt.name)
            return not ln or not tn or ln == tn
        if isinstance(lt, Int) and isinstance(tt, Int):
            return lt.offset == 0 and tt.offset == 0
        if isinstance(lt, Array) and isinstance(tt, Array):
            local_id, target_id = lt.type, tt.type
            continue
        return False
    return False


def types_compat(local: BTF, local_id: int, target: BTF, target_id: int, depth: int = 0) -> bool:
    """``bpf_core_types_are_compat``: what type-based relocations require of a candidate."""
    if depth > _MAX_DEPTH:
        return False
    lt, tt = local.resolve(local_id), target.resolve(target_id)
    if _core_kind(lt) != _core_kind(tt):
        return False
    if isinstance(lt, Struct | Union | Fwd) or _any_enum(lt) or lt.kind == Kind.VOID:
        return True
    if isinstance(lt, Int) and isinstance(tt, Int):
        return lt.offset == 0 and tt.offset == 0
    if isinstance(lt, Float):
        return True
    if isinstance(lt, Pointer) and isinstance(tt, Pointer):
        return types_compat(local, lt.type, target, tt.type, depth + 1)
    if isinstance(lt, Array) and isinstance(tt, Array):
        return types_compat(local, lt.type, target, tt.type, depth + 1)
    if isinstance(lt, FuncProto) and isinstance(tt, FuncProto):
        if len(lt.params) != len(tt.params):
            return False
        pairs = [(lt.type, tt.type)] + [(a.type, b.type) for a, b in zip(lt.params, tt.params)]
        return all(types_compat(local, a, target, b, depth + 1) for a, b in pairs)
    return False


def types_match(local: BTF, local_id: int, target: BTF, target_id: int, behind_pointer: bool = False, depth: int = 0) -> bool:
    """``bpf_core_types_match``: the stricter, structural check of ``bpf_core_type_matches``."""
    if depth > _MAX_DEPTH:
        return False
    lt, tt = local.resolve(local_id), target.resolve(target_id)
    if _core_kind(lt) != _core_kind(tt):
        return False
    if lt.name and tt.name and essential_name(lt.name) != essential_name(tt.name) and not isinstance(lt, Int | Float):
        return False
    if isinstance(lt, Fwd) or lt.kind == Kind.VOID:
        return True
    if isinstance(lt, Int) and isinstance(tt, Int):
        return lt.size == tt.size and lt.signed == tt.signed and lt.offset == tt.offset == 0
    if isinstance(lt, Float) and isinstance(tt, Float):
        return lt.size == tt.size
    if isinstance(lt, Enum | Enum64) and isinstance(tt, Enum | Enum64):
        names = {essential_name(v.name) for v in tt.values}
        return lt.size == tt.size and all(essential_name(v.name) in names for v in lt.values)
    if isinstance(lt, Struct | Union) and isinstance(tt, Struct | Union):
        if behind_pointer:
            return True
        targets = {m.name: m for m in tt.members}
        for m in lt.members:
            found = targets.get(m.name)
            if found is None or found.bitfield_size != m.bitfield_size:
                return False
            if not types_match(local, m.type, target, found.type, False, depth + 1):
                return False
        return len(lt.members) <= len(tt.members)
    if isinstance(lt, Pointer) and isinstance(tt, Pointer):
        return types_match(local, lt.type, target, tt.type, True, depth + 1)
    if isinstance(lt, Array) and isinstance(tt, Array):
        return lt.nelems == tt.nelems and types_match(local, lt.type, target, tt.type, behind_pointer, depth + 1)
    if isinstance(lt, FuncProto) and isinstance(tt, FuncProto):
        if len(lt.params) != len(tt.params):
            return False
        pairs = [(lt.type, tt.type)] + [(a.type, b.type) for a, b in zip(lt.params, tt.params)]
        return all(types_match(local, a, target, b, behind_pointer, depth + 1) for a, b in pairs)
    return False


def _match_member(local: _Spec, acc: _Accessor, target: BTF, target_id: int, spec: _Spec) -> int | None:
    """Find ``acc``'s member by name in ``target_id`` (through anonymous members); the next type id."""
    tt = target.resolve(target_id)
    if not isinstance(tt, Struct | Union):
        return None
    lt = local.btf.type_by_id(acc.type_id)
    assert isinstance(lt, Struct | Union)
    wanted = lt.members[acc.index]
    for i, m in enumerate(tt.members):
        if len(spec.raw) >= MAX_SPEC_LEN:
            raise BTFError("access too deep")
        spec.bit_offset += m.offset
        spec.raw.append(i)
        if not m.name:
            found = _match_member(local, acc, target, m.type, spec)
            if found is not None:
                return found
        elif m.name == wanted.name:
            if not _fields_compat(local.btf, wanted.type, target, m.type):
                return None
            spec.accessors.append(_Accessor(tt.id, i, m.name))
            return m.type
        spec.bit_offset -= m.offset
        spec.raw.pop()
    return None


def match_spec(local: _Spec, target: BTF, target_id: int) -> _Spec | None:
    """The target spec of ``local`` in candidate ``target_id``, or None (``bpf_core_spec_match``)."""
    spec = _Spec(target, target_id, local.kind)
    if local.kind in _TYPE_KINDS:
        if local.kind == CoreReloKind.TYPE_MATCHES:
            return spec if types_match(local.btf, local.root, target, target_id) else None
        return spec if types_compat(local.btf, local.root, target, target_id) else None
    if local.kind in _ENUM_KINDS:
        tt = target.resolve(target_id)
        if not isinstance(tt, Enum | Enum64):
            return None
        wanted = essential_name(local.accessors[0].name or "")
        for i, v in enumerate(tt.values):
            if essential_name(v.name) == wanted:
                spec.accessors.append(_Accessor(tt.id, i, v.name))
                spec.raw.append(i)
                return spec
        return None
    current = target_id
    for i, acc in enumerate(local.accessors):
        tt = target.resolve(current)
        if acc.name:
            found = _match_member(local, acc, target, current, spec)
            if found is None:
                return None
            current = found
            continue
        if i > 0:
            if not isinstance(tt, Array):
                return None
            if not _is_flex(target, spec.accessors[-1] if spec.accessors else None, tt) and acc.index >= tt.nelems:
                return None
            tt = target.resolve(tt.type)
        spec.accessors.append(_Accessor(tt.id, acc.index, None))
        spec.raw.append(acc.index)
        spec.bit_offset += acc.index * target.sizeof(tt) * 8
        current = tt.id
    return spec


@dataclasses.dataclass
class _Value:
    value: int = 0
    size: int = 0  # memory size of the field (load/store adjustment), 0 when none
    type_id: int = 0
    poison: bool = False
    validate: bool = True
    memory: str | None = None  # "pointer" or "unsigned": a load of it may change size


def _field_value(kind: CoreReloKind, spec: _Spec | None) -> _Value:
    if kind == CoreReloKind.FIELD_EXISTS:
        return _Value(1 if spec is not None else 0)
    if spec is None:
        return _Value(poison=True)
    btf = spec.btf
    acc = spec.accessors[-1]
    if acc.name is None:
        size = btf.sizeof(acc.type_id)
        if kind == CoreReloKind.FIELD_BYTE_OFFSET:
            element = btf.type_by_id(acc.type_id)
            memory = "pointer" if isinstance(element, Pointer) else "unsigned" if isinstance(element, Int) and not element.signed else None
            return _Value(spec.bit_offset // 8, size, acc.type_id, memory=memory)
        if kind == CoreReloKind.FIELD_BYTE_SIZE:
            return _Value(size)
        raise BTFError(f"{kind.name} cannot apply to an array element")
    parent = btf.type_by_id(acc.type_id)
    assert isinstance(parent, Struct | Union)
    member = parent.members[acc.index]
    field = btf.resolve(member.type)
    bit_off, bit_size = spec.bit_offset, member.bitfield_size
    if bit_size:
        byte_size = btf.sizeof(field)
        byte_off = bit_off // 8 // byte_size * byte_size
        while bit_off + bit_size - byte_off * 8 > byte_size * 8:
            if byte_size >= 8:
                raise BTFError(f"bitfield {member.name!r} cannot be read with a 64-bit load")
            byte_size *= 2
            byte_off = bit_off // 8 // byte_size * byte_size
    else:
        byte_size = btf.sizeof(field)
        byte_off = bit_off // 8
        bit_size = byte_size * 8
    if kind == CoreReloKind.FIELD_BYTE_OFFSET:
        memory = "pointer" if isinstance(field, Pointer) else "unsigned" if isinstance(field, Int) and not field.signed else None
        return _Value(byte_off, 0 if member.bitfield_size else byte_size, field.id, validate=not member.bitfield_size, memory=memory)
    if kind == CoreReloKind.FIELD_BYTE_SIZE:
        return _Value(byte_size, validate=not member.bitfield_size)
    if kind == CoreReloKind.FIELD_SIGNED:
        return _Value(int(_any_enum(field) or (isinstance(field, Int) and bool(field.encoding & IntEncoding.SIGNED))))
    if kind == CoreReloKind.FIELD_LSHIFT_U64:
        return _Value(64 - (bit_off + bit_size - byte_off * 8), validate=not member.bitfield_size)
    if kind == CoreReloKind.FIELD_RSHIFT_U64:
        return _Value(64 - bit_size)
    raise BTFError(f"unknown field relocation kind {kind}")


def _type_value(kind: CoreReloKind, spec: _Spec | None) -> _Value:
    if spec is None:
        return _Value(0)
    if kind == CoreReloKind.TYPE_ID_TARGET:
        return _Value(spec.root, validate=False)
    if kind in (CoreReloKind.TYPE_EXISTS, CoreReloKind.TYPE_MATCHES):
        return _Value(1)
    if kind == CoreReloKind.TYPE_SIZE:
        return _Value(spec.btf.sizeof(spec.root))
    raise BTFError(f"unknown type relocation kind {kind}")


def _enum_value(kind: CoreReloKind, spec: _Spec | None) -> _Value:
    if kind == CoreReloKind.ENUMVAL_EXISTS:
        return _Value(1 if spec is not None else 0)
    if spec is None:
        return _Value(poison=True)
    t = spec.btf.type_by_id(spec.accessors[0].type_id)
    assert isinstance(t, Enum | Enum64)
    return _Value(t.values[spec.accessors[0].index].value)


def _value(kind: CoreReloKind, spec: _Spec | None) -> _Value:
    if kind in _FIELD_KINDS:
        return _field_value(kind, spec)
    if kind in _TYPE_KINDS:
        return _type_value(kind, spec)
    return _enum_value(kind, spec)


class Targets:
    """Where candidates come from: the running kernel's BTF (and module BTF when vmlinux has no
    candidate), indexed by essential name once."""

    def __init__(self, base: BTF, modules: Iterable[BTF] = ()) -> None:
        """``base`` is vmlinux's BTF; ``modules`` (an iterable read on first miss) split BTF on it."""
        self.base = base
        self._modules = modules
        self._loaded: list[BTF] | None = None
        self._flavored: dict[int, dict[str, list[int]]] = {}
        self._cache: dict[tuple[str, Kind], list[tuple[BTF, int]]] = {}

    def candidates(self, local: Type) -> list[tuple[BTF, int]]:
        """Target types with ``local``'s essential name and a compatible kind (looked up once)."""
        name = essential_name(local.name)
        key = (name, _core_kind(local))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        found = self._in(self.base, name, local)
        if not found:
            if self._loaded is None:
                self._loaded = list(self._modules)
            for module in self._loaded:
                found += [c for c in self._in(module, name, local) if c[1] >= module.first_id]
        self._cache[key] = found
        return found

    def _in(self, btf: BTF, name: str, local: Type) -> list[tuple[BTF, int]]:
        kind = _core_kind(local)
        ids = [t.id for t in btf.find(name)] + self._flavors(btf).get(name, [])
        out = []
        for type_id in ids:
            t = btf.type_by_id(type_id)
            if _core_kind(t) == kind:
                out.append((btf, type_id))
        return out

    def _flavors(self, btf: BTF) -> dict[str, list[int]]:
        """Target types whose own names carry a ``___flavor`` suffix, by essential name (found by
        scanning the string section for ``___``, without indexing every name)."""
        key = id(btf)
        found = self._flavored.get(key)
        if found is None:
            found = {}
            for match in _FLAVORED.finditer(btf.strings.data):
                name = match.group().decode("utf-8", "surrogateescape")
                short = essential_name(name)
                if short != name:
                    found.setdefault(short, []).extend(t.id for t in btf.find(name) if t.id >= btf.first_id)
            self._flavored[key] = found
        return found


_KERNEL: Targets | None = None


def kernel_targets() -> Targets:
    """The running kernel's candidates: vmlinux BTF (parsed once per process) and, read on the
    first miss, every module's BTF under /sys/kernel/btf."""
    global _KERNEL
    if _KERNEL is None:
        from .parse import vmlinux

        _KERNEL = Targets(vmlinux(), _module_btfs())
    return _KERNEL


def _module_btfs() -> Iterator[BTF]:
    """Each kernel module's BTF (split on vmlinux), parsed lazily; unreadable ones are skipped."""
    import os

    from .parse import VMLINUX_PATH, parse, vmlinux

    directory = os.path.dirname(VMLINUX_PATH)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return
    for name in names:
        if name == "vmlinux":
            continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                data = f.read(64 << 20)
            yield parse(data, base=vmlinux(), lazy=True)
        except (OSError, BTFError):
            continue


@dataclasses.dataclass(frozen=True)
class Poisoned:
    """An instruction poisoned because its relocation matched nothing in the running kernel."""

    insn: int
    description: str


def relocate(code: bytearray, relos: Sequence[CoreRelo], local: BTF, targets: Targets, program: str) -> list[Poisoned]:
    """Apply ``relos`` (``insn_off`` in instructions) to ``code`` in place; the poisoned ones.

    ``CoreError`` for a relocation that cannot be applied (malformed, ambiguous, or whose
    instruction does not hold the value the compiler computed)."""
    poisoned: list[Poisoned] = []
    cache: dict[tuple[int, str, int], tuple[_Value, _Value, str]] = {}
    for relo in relos:
        kind = relo.kind
        where = f"program {program!r} instruction {relo.insn_off}"
        if not isinstance(kind, CoreReloKind):
            raise CoreError(f"{where}: unknown CO-RE relocation kind {kind}")
        key = (relo.type_id, relo.access, int(kind))
        if key not in cache:
            try:
                cache[key] = _resolve(relo, local, targets)
            except (BTFError, KeyError, LookupError) as err:
                raise CoreError(f"{where}: CO-RE {kind.name} relocation of type [{relo.type_id}] access {relo.access!r}: {err}") from None
        orig, new, what = cache[key]
        try:
            if new.poison:
                _poison(code, relo.insn_off)
                poisoned.append(Poisoned(relo.insn_off, f"{kind.name.lower()} of {what}: not found in the running kernel's BTF"))
                continue
            if _patch(code, relo.insn_off, orig, new):
                poisoned.append(Poisoned(relo.insn_off, f"{kind.name.lower()} of {what}: the kernel's field has another size or sign"))
        except ValueError as err:
            raise CoreError(f"{where}: CO-RE {kind.name} of {what}: {err}") from None
    return poisoned


def _resolve(relo: CoreRelo, local: BTF, targets: Targets) -> tuple[_Value, _Value, str]:
    """``(local value, target value, description)`` of one relocation."""
    kind = CoreReloKind(relo.kind)
    local_spec = parse_spec(local, relo.type_id, relo.access, kind)
    what = local_spec.describe()
    if kind == CoreReloKind.TYPE_ID_LOCAL:
        return _Value(relo.type_id), _Value(relo.type_id), what
    root = local.type_by_id(relo.type_id)
    if not root.name:
        raise BTFError(f"{what}: an anonymous type cannot be relocated")
    orig = _value(kind, local_spec)
    chosen: _Value | None = None
    for btf, candidate in targets.candidates(root):
        spec = match_spec(local_spec, btf, candidate)
        if spec is None:
            continue
        value = _value(kind, spec)
        if chosen is None:
            chosen = value
        elif (value.value, value.poison) != (chosen.value, chosen.poison):
            raise BTFError(f"{what}: candidates in the kernel disagree ({chosen.value} and {value.value}): ambiguous")
    if chosen is None:
        chosen = _value(kind, None)
    if kind in _EXISTS_KINDS and chosen.poison:
        chosen = _Value(0)
    return orig, chosen, what


def _poison(code: bytearray, index: int) -> None:
    """Make slot ``index`` (and the second half of an ``ld_imm64``) a call to ``POISON``."""
    slots = 2 if code_at(code, index) == LD_IMM64 else 1
    for at in range(index, index + slots):
        if (at + 1) * INSN_SIZE > len(code):
            raise ValueError(f"instruction {at} is past the end of the program")
        code[at * INSN_SIZE : (at + 1) * INSN_SIZE] = bytes(INSN_SIZE)
        code[at * INSN_SIZE] = CALL
        set_imm(code, at, POISON)


def _patch(code: bytearray, index: int, orig: _Value, new: _Value) -> bool:
    """Patch one instruction with ``new``; True when it had to be poisoned instead."""
    if (index + 1) * INSN_SIZE > len(code):
        raise ValueError(f"instruction {index} is past the end of the program")
    opcode = code_at(code, index)
    cls = opcode & 0x07
    if cls in (Class.ALU, Class.ALU64):
        if opcode & 0x08:
            raise ValueError("the instruction takes a register, not an immediate")
        if orig.validate and imm_at(code, index) & 0xFFFFFFFF != orig.value & 0xFFFFFFFF:
            raise ValueError(f"its immediate is {imm_at(code, index)}, the compiler's value {orig.value}")
        set_imm(code, index, new.value & 0xFFFFFFFF)
        return False
    if cls in (Class.LDX, Class.ST, Class.STX):
        if orig.validate and off_at(code, index) != orig.value:
            raise ValueError(f"its offset is {off_at(code, index)}, the compiler's value {orig.value}")
        if new.value > 0x7FFF:
            raise ValueError(f"offset {new.value} does not fit in the instruction")
        if orig.size != new.size:
            if not _resizable(orig, new):
                _poison(code, index)
                return True
            have = _SIZE_FIELD[opcode & 0x18]
            if have != orig.size or new.size not in _SIZE_CODE:
                raise ValueError(f"memory size {have} is not the field's {orig.size}, or {new.size} cannot be loaded")
            code[index * INSN_SIZE] = (opcode & ~0x18 & 0xFF) | _SIZE_CODE[new.size]
        set_off(code, index, new.value)
        return False
    if opcode == LD_IMM64:
        dst, src = regs_at(code, index)
        if src or off_at(code, index) or (index + 2) * INSN_SIZE > len(code) or code[(index + 1) * INSN_SIZE : (index + 1) * INSN_SIZE + 4] != bytes(4):
            raise ValueError("the ld_imm64 has an unexpected form")
        have = (imm_at(code, index) & 0xFFFFFFFF) | (imm_at(code, index + 1) & 0xFFFFFFFF) << 32
        if orig.validate and have != orig.value & ((1 << 64) - 1):
            raise ValueError(f"its immediate is {have}, the compiler's value {orig.value}")
        set_imm64(code, index, new.value & ((1 << 64) - 1))
        return False
    raise ValueError(f"opcode {opcode:#x} cannot be relocated")


def _resizable(orig: _Value, new: _Value) -> bool:
    """Whether a load/store may change size: pointers, or unsigned integers, on both sides (libbpf's rule)."""
    return orig.memory is not None and orig.memory == new.memory
