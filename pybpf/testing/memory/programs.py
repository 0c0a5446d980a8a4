"""Programs and BTF in the memory kernel.

Programs do not run here: there is no verifier and no BPF machine. Loading one raises
``NotSupportedError`` ("not in the memory kernel") unless the test gave a Python stand-in for it
by name: ``memory_kernel(programs={"xdp_pass": lambda data: 2})``. A stand-in loads as a program
(an fd, an id, info, pins, PROG_ARRAY slots) and ``Program.test_run(data)`` calls it: it takes the
input bytes and returns the return value, or ``(return value, output bytes)``. Attaching a program
anywhere is not in the memory kernel either.

BTF blobs are kept as given (not verified) so that maps can name their key and value types and
``BTF_GET_FD_BY_ID`` gives them back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

from .objects import MemObject

StandIn = Callable[[bytes], Union[int, tuple[int, bytes]]]
"""A Python stand-in for a program: input bytes -> return value, or (return value, output bytes)."""


class MemProgram(MemObject):
    """A loaded program: a stand-in with the type and name it was loaded under."""

    kind = "program"

    def __init__(self, name: str, prog_type: int, expected_attach_type: int, stand_in: StandIn) -> None:
        super().__init__(name)
        self.type = prog_type
        self.expected_attach_type = expected_attach_type
        self.stand_in = stand_in
        self.runs = 0

    def run(self, data: bytes) -> tuple[int, bytes]:
        """Call the stand-in: (return value, output data)."""
        self.runs += 1
        result = self.stand_in(data)
        if isinstance(result, tuple):
            retval, out = result
            return int(retval) & 0xFFFFFFFF, bytes(out)
        return int(result) & 0xFFFFFFFF, data

    def info(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "name": self.name.encode(), "run_cnt": self.runs}


class MemBtf(MemObject):
    """A BTF blob loaded with ``BPF_BTF_LOAD``."""

    kind = "BTF"

    def __init__(self, data: bytes) -> None:
        super().__init__("")
        self.data = data

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "btf_size": len(self.data)}
