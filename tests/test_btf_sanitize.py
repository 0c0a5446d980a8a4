"""BTF sanitising: kinds a kernel refuses are rewritten before BPF_BTF_LOAD, decided by probing."""

from __future__ import annotations

import pytest

from pybpf.btf import Kind, encode, load, parse
from pybpf.btf.sanitize import kernel_takes, sanitize
from test_btf import every_kind

_FEATURE_KINDS = {"float": Kind.FLOAT, "decl_tag": Kind.DECL_TAG, "type_tag": Kind.TYPE_TAG, "enum64": Kind.ENUM64}


def test_everything_rewritten_keeps_the_layout_and_loads_here() -> None:
    data = encode(every_kind())
    clean = sanitize(data, takes=lambda feature: False)
    assert len(clean) == len(data) and clean != data
    kinds = {t.kind for t in parse(clean).own_types()}
    assert not kinds & {Kind.FLOAT, Kind.DECL_TAG, Kind.TYPE_TAG, Kind.ENUM64, Kind.VAR, Kind.DATASEC, Kind.FUNC, Kind.FUNC_PROTO}
    assert sanitize(data, takes=lambda feature: True) is data  # nothing to do: the same bytes


@pytest.mark.usefixtures("no_fd_leak")
def test_rewritten_btf_loads_into_this_kernel() -> None:
    with load(sanitize(encode(every_kind()), takes=lambda feature: False)) as handle:
        assert handle.id > 0


@pytest.mark.usefixtures("no_fd_leak")
def test_every_kind_loads_on_this_kernel_whatever_it_takes() -> None:
    with load(every_kind()) as handle:
        loaded = {t.kind for t in parse(handle.raw()).own_types()}
    for feature, kind in _FEATURE_KINDS.items():
        assert (kind in loaded) == kernel_takes(feature), feature
