"""``BPF_MAP_CREATE`` for a validated ``MapSpec``: inner-map templates, BTF types where the map
type takes them, and errors that say why the kernel refused."""

from __future__ import annotations

import ctypes
import errno
import os
from typing import TYPE_CHECKING, Any

from .. import features
from .._fd import fd_of
from .._sys import commands
from .._sys.attrs import MapCreateAttr
from .._sys.traits import MAP_TYPES, map_type_name
from ..errors import ENOTSUPP, BPFError, NotSupportedError, error_for
from .spec import MapSpec

if TYPE_CHECKING:
    from ..btf import BtfHandle


def _btf_key_type(spec: MapSpec) -> Any:
    """The key type to describe: the declared one, else an int or byte array of the key size."""
    if spec.key is not None or not spec.key_size:
        return spec.key
    return ctypes.c_uint32 if spec.key_size == 4 else ctypes.c_uint8 * spec.key_size


def create_fd(spec: MapSpec) -> int:
    """``BPF_MAP_CREATE`` for a validated spec (creating and closing the inner template if any).

    BTF types (``spec.btf`` and its type ids, or a declared ctypes value type) are given to the
    kernel where the map type takes them (as
    libbpf does, the map is created without BTF if the kernel refuses it, except for the storage
    maps, which cannot exist without it).
    """
    attr = MapCreateAttr(
        map_type=spec.type,
        key_size=spec.key_size or 0,
        value_size=spec.value_size or 0,
        max_entries=spec.max_entries,
        map_flags=spec.create_flags,
        numa_node=spec.numa_node or 0,
        map_name=spec.name.encode(),
        map_ifindex=spec.ifindex,
        map_extra=spec.map_extra,
    )
    traits = MAP_TYPES[spec.type]  # type: ignore[index]
    inner_fd = -1
    try:
        if isinstance(spec.inner_map, MapSpec):
            inner_fd = create_fd(spec.inner_map)
            attr.inner_map_fd = inner_fd
        elif spec.inner_map is not None:
            attr.inner_map_fd = fd_of(spec.inner_map, "MapSpec.inner_map")
        typed = spec.value is not None or (spec.btf is not None and (spec.btf_key_type_id or spec.btf_value_type_id))
        if typed and traits.btf_types:
            fd = _create_with_btf(attr, spec)
            if fd >= 0:
                return fd
        try:
            return commands.map_create(attr, spec.name)
        except BPFError as err:
            raise _create_error(spec, err) from None
    finally:
        if inner_fd >= 0:
            os.close(inner_fd)


def _create_with_btf(attr: MapCreateAttr, spec: MapSpec) -> int:
    """Create with BTF key/value types (``spec.btf`` or built from the ctypes types); -1 when BTF
    cannot be had or is refused and the map can do without."""
    if spec.btf is not None:
        return _create_typed(attr, spec, spec.btf, spec.btf_key_type_id, spec.btf_value_type_id)
    from ..btf import load_map_types  # imported on first use: plain maps never need BTF

    try:
        handle, key_id, value_id = load_map_types(_btf_key_type(spec), spec.value)
    except (TypeError, BPFError):
        if MAP_TYPES[spec.type].needs_btf:  # type: ignore[index]
            raise
        return -1
    with handle:
        return _create_typed(attr, spec, handle, key_id, value_id)


def _create_typed(attr: MapCreateAttr, spec: MapSpec, handle: BtfHandle, key_id: int, value_id: int) -> int:
    """``BPF_MAP_CREATE`` with ``btf_fd`` and the type ids; -1 when refused and the map can do without."""
    attr.btf_fd, attr.btf_key_type_id, attr.btf_value_type_id = handle.fd, key_id, value_id
    try:
        return commands.map_create(attr, spec.name)
    except BPFError as err:
        if MAP_TYPES[spec.type].needs_btf:  # type: ignore[index]
            raise _create_error(spec, err) from None
        return -1
    finally:
        attr.btf_fd = attr.btf_key_type_id = attr.btf_value_type_id = 0


def _create_error(spec: MapSpec, err: BPFError) -> BPFError:
    """Say why a create failed in the user's terms, keeping the errno."""
    kind = map_type_name(spec.type)
    code = err.errno
    what = f"create {kind} map"
    lacking = features.lacking(f"map_type:{kind}", code, f"{kind} maps")
    if lacking is not None:
        return NotSupportedError(code, what, spec.name, message=lacking)
    if code == errno.EINVAL:
        return error_for(code, what, spec.name, message="the kernel refused the attributes (sizes, flags or map_extra) for this type")
    if code in (ENOTSUPP, errno.EOPNOTSUPP):
        return NotSupportedError(code, what, spec.name, message=f"this kernel cannot create {kind} maps with these options")
    if code == errno.ENOMEM:
        return error_for(code, what, spec.name, message=f"not enough memory for {spec.max_entries} entries")
    return err if err.op == what else error_for(code, what, spec.name)
