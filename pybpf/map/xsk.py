"""``XskMap``: the XSKMAP an XDP program redirects frames through to AF_XDP sockets."""

from __future__ import annotations

import ctypes
import errno
from typing import Any

from .._sys.constants import MapType
from ..errors import ENOTSUPP, BPFError, IndexOutOfRangeError, NotSupportedError, error_for
from .fdmaps import _FdValueMap
from .spec import MapSpec


class XskMap(_FdValueMap):
    """XSKMAP: slot ``i`` (usually a queue id) holds an AF_XDP socket; ``xskmap[i] = xsk`` takes an
    ``XskSocket`` or its fd. A socket leaves every slot when it closes.

    The kernel lets only XDP programs read slots: a lookup from user space raises
    ``NotSupportedError``, and ``keys()`` lists every slot index, used or not.
    """

    map_types = (MapType.XSKMAP,)
    value_what = "AF_XDP socket"

    def __init__(self, fd: int, spec: MapSpec, *, readonly: bool = False) -> None:
        super().__init__(fd, spec.copy(key=ctypes.c_uint32, value=ctypes.c_uint32), readonly=readonly)

    @classmethod
    def _defaults(cls) -> dict[str, Any]:
        return {"type": MapType.XSKMAP, "key_size": 4, "value_size": 4}

    def _error(self, op: str, code: int, key: Any = None) -> BPFError | ValueError:
        if self.closed:
            return self.closed_error()
        where = f"{op} on XskMap" + (f" {self.name!r}" if self.name else "")
        if op in ("lookup", "lookup_and_delete") and code in (errno.EOPNOTSUPP, ENOTSUPP):
            return NotSupportedError(code, where, message="the kernel does not let user space read XSKMAP slots "
                                     "(only XDP programs can look them up)")
        if op == "update" and code == errno.EOPNOTSUPP:
            return error_for(code, where, message=f"slot {key!r}: the value must be an AF_XDP socket")
        if op == "delete" and code == errno.EINVAL:
            return IndexOutOfRangeError(code, where, message=f"slot {key!r} is out of range (max_entries {self.max_entries})")
        return super()._error(op, code, key)
