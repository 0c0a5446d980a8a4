"""BTF in the kernel: ``load`` a blob (``BPF_BTF_LOAD``) into a ``BtfHandle`` that owns the fd.

A map created with ``btf_fd`` keeps its own reference to the BTF object, so the handle can be
closed right after ``BPF_MAP_CREATE``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os

from .._fd import FdOwner
from .._sys import commands
from .._sys.btf import btf_info, btf_load
from .._sys.constants import Cmd
from ..errors import BPFError, BTFLoadError
from .build import btf_from_ctypes
from .encode import encode
from .parse import parse, vmlinux
from .sanitize import sanitize
from .spec import BTF

LOG_SIZE = 256 * 1024
"""Bytes of kernel log kept when a load fails (the log rotates: its tail says why)."""

_NAME_SIZE = 64


@dataclasses.dataclass(frozen=True)
class BtfInfo:
    """What the kernel says about a BTF object (``struct bpf_btf_info``)."""

    id: int
    size: int
    name: str
    kernel: bool


class BtfHandle(FdOwner):
    """A BTF object in the kernel; owns its fd (maps and programs using the BTF keep it alive after
    ``close()``). ``load`` one, or open it with ``from_id``/``from_fd``."""

    _what = "BTF handle"

    def __init__(self, fd: int) -> None:
        """Wrap an fd this object now owns."""
        self._own(fd)
        self._id: int | None = None

    @classmethod
    def from_id(cls, btf_id: int) -> BtfHandle:
        """Open the BTF object with kernel id ``btf_id`` (``bpftool btf list`` shows them)."""
        return cls(commands.fd_by_id(Cmd.BTF_GET_FD_BY_ID, btf_id, "open BTF"))

    @classmethod
    def from_fd(cls, fd: int) -> BtfHandle:
        """A handle on a duplicate of ``fd`` (the caller keeps its own fd)."""
        return cls(os.dup(fd))

    @property
    def id(self) -> int:
        """The kernel's id of this BTF object."""
        if self._id is None:
            self._id = self.info().id
        return self._id

    def info(self) -> BtfInfo:
        """The kernel's ``bpf_btf_info``: id, size of the raw BTF, name, whether it is the kernel's
        (name and kernel flag: Linux 5.11+; empty and False before)."""
        name = ctypes.create_string_buffer(_NAME_SIZE)
        try:
            raw = btf_info(self.fd, name_buf=name)
        except BPFError as err:
            if err.errno != errno.E2BIG:
                raise
            raw = btf_info(self.fd)  # before Linux 5.11 BTF objects have no name or kernel flag
        return BtfInfo(id=raw.id, size=raw.btf_size, name=name.value.decode(errors="replace"), kernel=bool(raw.kernel_btf))

    def raw(self) -> bytes:
        """The BTF blob as the kernel holds it."""
        size = btf_info(self.fd).btf_size
        data = ctypes.create_string_buffer(max(size, 1))
        btf_info(self.fd, data)
        return data.raw[:size]

    def btf(self) -> BTF:
        """The parsed BTF (a kernel module's on top of vmlinux's, decoded lazily)."""
        info = self.info()
        if not info.kernel:
            return parse(self.raw())
        if info.name == "vmlinux":
            return vmlinux()
        return parse(self.raw(), base=vmlinux(), lazy=True)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<BtfHandle {state}>"


def load(btf: BTF | bytes, name: str = "") -> BtfHandle:
    """Load BTF into the kernel (``BPF_BTF_LOAD``), kinds this kernel refuses rewritten first
    (``pybpf.btf.sanitize``: ENUM64 before 6.0, TYPE_TAG before 5.17, ...).

    On refusal, raises ``BTFLoadError`` with the kernel's log (``.log``; its tail is in the message)
    and the errno of the refusal; ``PermissionDeniedError`` without CAP_BPF.
    """
    data = sanitize(encode(btf) if isinstance(btf, BTF) else bytes(btf))
    try:
        return BtfHandle(btf_load(data, name=name))
    except BPFError as err:
        if err.errno in (errno.EPERM, errno.EACCES):
            raise
        refusal = err.errno or errno.EINVAL
    log = ctypes.create_string_buffer(LOG_SIZE)
    try:
        fd = btf_load(data, log, log_level=1, name=name)
    except BPFError:
        text = log.value.decode(errors="replace")
        raise BTFLoadError(refusal, "load BTF", name, log=text) from None  # ENOSPC of a full log is not the reason
    return BtfHandle(fd)


def load_map_types(key: type | None, value: type) -> tuple[BtfHandle, int, int]:
    """Load BTF for a map's ctypes ``key`` and ``value``: ``(handle, key type id, value type id)``.

    Put ``handle.fd`` and the ids in ``BPF_MAP_CREATE``'s ``btf_fd``, ``btf_key_type_id`` and
    ``btf_value_type_id``, then close the handle. ``key=None`` gives key id 0 (only some map
    types accept that). Raises ``TypeError`` for types BTF cannot describe.
    """
    btf, ids = btf_from_ctypes(*(t for t in (key, value) if t is not None))
    return load(btf), (ids[key] if key is not None else 0), ids[value]
