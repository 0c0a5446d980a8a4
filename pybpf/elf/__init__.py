"""Reading BPF object files (ELF, as clang writes them) into specs: no syscalls.

``read_object`` gives the maps (legacy ``maps``, BTF ``.maps`` with static values, global data),
the programs (by section name, relocated and linked with their subprograms) and the object's
BTF; every problem with the file is an ``ELFError`` (a ``ValueError``) naming it.
"""

from .btf import ObjectBTF
from ..errors import ELFError
from .maps import DATA_SECTIONS
from .names import data_map_name, kernel_name
from .object import ElfObject, read_object
from .sections import SECTION_DEFS, SectionDef, section_def

__all__ = [
    "DATA_SECTIONS",
    "ELFError",
    "ElfObject",
    "ObjectBTF",
    "SECTION_DEFS",
    "SectionDef",
    "data_map_name",
    "kernel_name",
    "read_object",
    "section_def",
]
