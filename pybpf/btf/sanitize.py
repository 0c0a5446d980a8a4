"""BTF made acceptable to the running kernel before ``BPF_BTF_LOAD``, as libbpf's
``bpf_object__sanitize_btf`` does: kinds the kernel refuses are rewritten, in place, into kinds
of the same record length that it takes. Whether the kernel takes a kind is found by loading a
tiny BTF blob with it (once per process), never from the version number alone.

====================  =========  ===================================================
refused               since      rewritten as
====================  =========  ===================================================
VAR, DATASEC          5.2        INT of 1 byte; STRUCT of the variables
FUNC, FUNC_PROTO      5.0        TYPEDEF; ENUM of the parameters
global FUNC linkage   5.6        static linkage
FLOAT                 5.13       an empty STRUCT of the same size
DECL_TAG              5.16       INT of 1 byte
TYPE_TAG              5.17       CONST
ENUM64, signed ENUM   6.0        UNION of int members; the sign flag cleared
====================  =========  ===================================================
"""

from __future__ import annotations

import errno
import functools
import os
import struct
from collections.abc import Callable

from .._sys.btf import btf_load
from ..errors import BPFError, BTFError
from .build import Builder
from .encode import encode
from .layout import TYPE_SIZE, record_offsets
from .types import (
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    EnumValue,
    Float,
    Func,
    FuncLinkage,
    FuncProto,
    Int,
    IntEncoding,
    Kind,
    Member,
    Param,
    Pointer,
    Struct,
    TypeTag,
    Var,
    VarLinkage,
    VarSecinfo,
)

_INT_1BYTE = 8  # BTF_INT_ENC(0, 0, 8): an unsigned 8-bit int


def _int() -> Builder:
    b = Builder()
    b.add(Int(name="int", size=4, encoding=IntEncoding.SIGNED))
    return b


def _probe_datasec(b: Builder) -> None:
    var = b.add(Var(name="x", type=1, linkage=VarLinkage.GLOBAL))
    b.add(Datasec(name=".data", size=4, vars=(VarSecinfo(type=var, offset=0, size=4),)))


def _probe_func(b: Builder) -> None:
    proto = b.add(FuncProto(type=1, params=(Param(name="a", type=1),)))
    b.add(Func(name="f", type=proto, linkage=FuncLinkage.STATIC))


def _probe_func_global(b: Builder) -> None:
    proto = b.add(FuncProto(type=1, params=(Param(name="a", type=1),)))
    b.add(Func(name="f", type=proto, linkage=FuncLinkage.GLOBAL))


def _probe_float(b: Builder) -> None:
    b.add(Float(name="float", size=4))


def _probe_decl_tag(b: Builder) -> None:
    s = b.add(Struct(name="s", size=4, members=(Member(name="a", type=1, offset=0),)))
    b.add(DeclTag(name="tag", type=s, component_idx=-1))


def _probe_type_tag(b: Builder) -> None:
    tag = b.add(TypeTag(name="tag", type=1))
    b.add(Pointer(type=tag))


def _probe_enum64(b: Builder) -> None:
    b.add(Enum64(name="e", size=8, values=(EnumValue(name="E", value=1 << 40),)))


def _probe_signed_enum(b: Builder) -> None:
    b.add(Enum(name="e", size=4, values=(EnumValue(name="E", value=-1),), signed=True))


_PROBES: dict[str, Callable[[Builder], None]] = {
    "datasec": _probe_datasec,
    "func": _probe_func,
    "func_global": _probe_func_global,
    "float": _probe_float,
    "decl_tag": _probe_decl_tag,
    "type_tag": _probe_type_tag,
    "enum64": _probe_enum64,
    "signed_enum": _probe_signed_enum,
}


@functools.cache
def kernel_takes(feature: str) -> bool:
    """Whether the running kernel loads BTF with ``feature`` (a key of the probe table), found by
    loading a tiny blob with it. A refusal for lack of privilege counts as taken (nothing to fix)."""
    b = _int()
    _PROBES[feature](b)
    try:
        fd = btf_load(encode(b.build()))
    except BPFError as err:
        return err.errno in (errno.EPERM, errno.EACCES)
    os.close(fd)
    return True


def sanitize(data: bytes, takes: Callable[[str], bool] = kernel_takes) -> bytes:
    """``data`` (native-order ``.BTF``) with every kind ``takes`` says the kernel refuses rewritten;
    the same bytes when nothing needs it."""
    try:
        offsets = record_offsets(data)
    except BTFError:
        return data  # malformed: the kernel's refusal says why
    kinds = {(struct.unpack_from("=I", data, at + 4)[0] >> 24) & 0x1F for at in offsets}
    signed_enums = any(
        (info >> 24) & 0x1F == Kind.ENUM and info >> 31 for info in (struct.unpack_from("=I", data, at + 4)[0] for at in offsets)
    )
    needed = set()
    if kinds & {Kind.VAR, Kind.DATASEC} and not takes("datasec"):
        needed.add("datasec")
    if kinds & {Kind.FUNC, Kind.FUNC_PROTO} and not takes("func"):
        needed.add("func")
    elif Kind.FUNC in kinds and not takes("func_global"):
        needed.add("func_global")
    for kind, feature in ((Kind.FLOAT, "float"), (Kind.DECL_TAG, "decl_tag"), (Kind.TYPE_TAG, "type_tag"), (Kind.ENUM64, "enum64")):
        if kind in kinds and not takes(feature):
            needed.add(feature)
    if signed_enums and not takes("signed_enum"):
        needed.add("signed_enum")
    if not needed:
        return data
    out = bytearray(data)
    int_id = _some_int(out, offsets) if "enum64" in needed else 0
    a_name = _some_name(out, offsets) if "func" in needed else 0
    for at in offsets:
        _rewrite(out, at, needed, int_id, a_name)
    return bytes(out)


def _some_int(data: bytearray, offsets: list[int]) -> int:
    """The id of a 4-byte INT already in the BTF (what ENUM64 placeholders become unions of)."""
    for index, at in enumerate(offsets):
        info, size = struct.unpack_from("=II", data, at + 4)
        if (info >> 24) & 0x1F == Kind.INT and size == 4:
            return index + 1
    raise BTFError("ENUM64 must become a union of ints for this kernel, but the BTF has no 4-byte int")


def _some_name(data: bytearray, offsets: list[int]) -> int:
    """A name offset already in the BTF that is a C identifier (an INT's): for unnamed parameters
    turned enumerators, which must have a name."""
    for at in offsets:
        name_off, info = struct.unpack_from("=II", data, at)
        if (info >> 24) & 0x1F == Kind.INT and name_off:
            return int(name_off)
    raise BTFError("FUNC_PROTO must become an ENUM for this kernel, but the BTF has no named INT to name parameters with")


def _rewrite(data: bytearray, at: int, needed: set[str], int_id: int, a_name: int) -> None:
    name_off, info, size = struct.unpack_from("=III", data, at)
    kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
    extra = at + TYPE_SIZE
    if kind == Kind.VAR and "datasec" in needed:
        struct.pack_into("=IIII", data, at, name_off, Kind.INT << 24, 1, _INT_1BYTE)
    elif kind == Kind.DATASEC and "datasec" in needed:
        struct.pack_into("=III", data, at, 0, (Kind.STRUCT << 24) | vlen, size)
        for i in range(vlen):
            var, offset, _ = struct.unpack_from("=III", data, extra + 12 * i)
            struct.pack_into("=III", data, extra + 12 * i, 0, var, offset * 8)
    elif kind == Kind.FUNC_PROTO and "func" in needed:
        struct.pack_into("=III", data, at, 0, (Kind.ENUM << 24) | vlen, 4)
        for i in range(vlen):
            param_name, _ = struct.unpack_from("=II", data, extra + 8 * i)
            struct.pack_into("=II", data, extra + 8 * i, param_name or a_name, i)
    elif kind == Kind.FUNC and "func" in needed:
        struct.pack_into("=III", data, at, name_off, Kind.TYPEDEF << 24, size)
    elif kind == Kind.FUNC and "func_global" in needed and vlen == FuncLinkage.GLOBAL:
        struct.pack_into("=I", data, at + 4, (Kind.FUNC << 24) | FuncLinkage.STATIC)
    elif kind == Kind.FLOAT and "float" in needed:
        struct.pack_into("=III", data, at, 0, Kind.STRUCT << 24, size)
    elif kind == Kind.DECL_TAG and "decl_tag" in needed:
        struct.pack_into("=IIII", data, at, 0, Kind.INT << 24, 1, _INT_1BYTE)
    elif kind == Kind.TYPE_TAG and "type_tag" in needed:
        struct.pack_into("=II", data, at, 0, Kind.CONST << 24)
    elif kind == Kind.ENUM64 and "enum64" in needed:
        struct.pack_into("=III", data, at, name_off, (Kind.UNION << 24) | vlen, max(size, 4))
        for i in range(vlen):
            value_name, _, _ = struct.unpack_from("=III", data, extra + 12 * i)
            struct.pack_into("=III", data, extra + 12 * i, value_name, int_id, 0)
    elif kind == Kind.ENUM and info >> 31 and "signed_enum" in needed:
        struct.pack_into("=I", data, at + 4, info & 0x7FFFFFFF)
