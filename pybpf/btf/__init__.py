"""BTF: parse it (object files, the kernel's vmlinux), build it (from ctypes types), load it.

``parse`` and ``encode`` convert between ``.BTF`` bytes and a ``BTF`` of typed records;
``btf_from_ctypes`` describes ctypes types; ``load`` puts BTF in the kernel (``BtfHandle``);
``map_defs`` decodes the BTF map definitions of an object's ``.maps`` section.
"""

from .build import Builder, btf_from_ctypes
from .encode import encode
from ..errors import BTFError, BTFLoadError
from .ext import BTFExt, CoreRelo, CoreReloKind, FuncInfo, LineInfo, parse_ext
from .load import BtfHandle, BtfInfo, load, load_map_types
from .mapdef import MapDef, map_array, map_def, map_defs, map_type, map_uint
from .parse import parse, vmlinux
from .spec import BTF
from .strings import StringTable
from .typed import BTFTypeWarning
from .types import (
    Array,
    Const,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    EnumValue,
    Float,
    Func,
    FuncLinkage,
    FuncProto,
    Fwd,
    Int,
    IntEncoding,
    Kind,
    Member,
    Param,
    Pointer,
    Restrict,
    Struct,
    Type,
    Typedef,
    TypeTag,
    Union,
    Var,
    VarLinkage,
    VarSecinfo,
    Void,
    Volatile,
)

__all__ = [
    "BTF",
    "BTFError",
    "BTFExt",
    "BTFLoadError",
    "BTFTypeWarning",
    "Array",
    "BtfHandle",
    "BtfInfo",
    "Builder",
    "Const",
    "CoreRelo",
    "CoreReloKind",
    "Datasec",
    "DeclTag",
    "Enum",
    "Enum64",
    "EnumValue",
    "Float",
    "Func",
    "FuncInfo",
    "FuncLinkage",
    "FuncProto",
    "Fwd",
    "Int",
    "IntEncoding",
    "Kind",
    "LineInfo",
    "MapDef",
    "Member",
    "Param",
    "Pointer",
    "Restrict",
    "StringTable",
    "Struct",
    "Type",
    "TypeTag",
    "Typedef",
    "Union",
    "Var",
    "VarLinkage",
    "VarSecinfo",
    "Void",
    "Volatile",
    "btf_from_ctypes",
    "encode",
    "load",
    "load_map_types",
    "map_array",
    "map_def",
    "map_defs",
    "map_type",
    "map_uint",
    "parse",
    "parse_ext",
    "vmlinux",
]
