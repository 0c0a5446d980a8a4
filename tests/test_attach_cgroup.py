"""Attaching to cgroups on the real kernel, always to a child cgroup this test makes (never the
root): every cgroup attach type through a link, BPF_PROG_ATTACH with flags as an unpinnable
Link, the kernel's refusals in words, and the programs doing their job for sockets created in
the cgroup."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import probes
import pytest
from pybpf.testing.cgroups import child_cgroup, sockets_in
from scale import TIME

from pybpf import AttachType, CgroupFlags, Link, LinkType, Map, MapSpec, MapType, ProgramType
from pybpf._sys.attrs import ProgQueryAttr
from pybpf._sys.constants import Cmd
from pybpf._sys.syscall import bpf_errno
from pybpf.asm import DW, FP, R0, R1, R2, W, Assembler
from pybpf.errors import BPFError, NotSupportedError
from pybpf.programs import Program, ProgramSpec, cgroup_programs
from pybpf._sys.traits import ATTACH_TYPES
from pybpf.programs.cgroup import CGROUP_ATTACH_TYPES

BPFTOOL = shutil.which("bpftool")


@pytest.fixture
def cgroup() -> Iterator[str]:
    with child_cgroup() as path:
        yield path


def kernel_knows(attach_type: AttachType, cgroup: str) -> bool:
    """Raw probe (not through pybpf's attach code): BPF_PROG_QUERY of the type on a cgroup."""
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return bpf_errno(Cmd.PROG_QUERY, ProgQueryAttr(target_fd=fd, attach_type=attach_type)) >= 0
    finally:
        os.close(fd)


def load_for(attach_type: AttachType, value: int = 1, name: str = "cg_prog") -> Program:
    row = ATTACH_TYPES[attach_type]
    expected = attach_type if row.expected_at_load else None
    return Program.load(ProgramSpec(row.program_types[0], Assembler().mov64(R0, value).exit(), name=name,
                                    expected_attach_type=expected))


def attached_ids(cgroup: str, attach_type: AttachType) -> list[int]:
    return [p.id for p in cgroup_programs(cgroup, attach_types=(attach_type,))]


LOADABLE = [t for t in CGROUP_ATTACH_TYPES if t != AttachType.LSM_CGROUP]  # LSM programs need a BTF target


@pytest.mark.parametrize("attach_type", LOADABLE, ids=lambda t: t.name)
def test_every_cgroup_attach_type_links_and_detaches(cgroup: str, attach_type: AttachType) -> None:
    if not kernel_knows(attach_type, cgroup):
        since = ATTACH_TYPES[attach_type].since
        # the kernel cannot even load a program for the type: load one for its oldest sibling
        sibling = next(t for t in LOADABLE if ATTACH_TYPES[t].program_types == ATTACH_TYPES[attach_type].program_types)
        with load_for(sibling) as prog, pytest.raises(NotSupportedError, match=f"needs? Linux {since[0]}.{since[1]}"):
            prog.attach_cgroup(cgroup, attach_type)
        return
    with load_for(attach_type) as prog:
        link = prog.attach_cgroup(cgroup, attach_type)
        with link:
            info = link.info()
            assert info.type == LinkType.CGROUP and info.prog_id == prog.id
            assert info.attach_type == attach_type
            assert info.cgroup_id == os.stat(cgroup).st_ino
            assert attached_ids(cgroup, attach_type) == [prog.id]
        assert attached_ids(cgroup, attach_type) == []


def test_link_by_fd_and_pin(cgroup: str, pin_dir: Path) -> None:
    with load_for(AttachType.CGROUP_INET_EGRESS) as prog:
        fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            link = prog.attach_cgroup(fd, AttachType.CGROUP_INET_EGRESS)
        finally:
            os.close(fd)
        link.pin(pin_dir / "link")
        link.close()
        assert attached_ids(cgroup, AttachType.CGROUP_INET_EGRESS) == [prog.id]
        with Link.from_pin(pin_dir / "link") as again:
            assert again.info().prog_id == prog.id
        os.unlink(pin_dir / "link")  # the kernel lets the link go after an RCU grace period
        deadline = time.monotonic() + 5 * TIME
        while attached_ids(cgroup, AttachType.CGROUP_INET_EGRESS) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert attached_ids(cgroup, AttachType.CGROUP_INET_EGRESS) == []


@pytest.mark.parametrize("flags, word", [(CgroupFlags.NONE, ""), (CgroupFlags.ALLOW_OVERRIDE, "override"),
                                         (CgroupFlags.ALLOW_MULTI, "multi")])
def test_prog_attach_with_flags_is_an_unpinnable_link(cgroup: str, pin_dir: Path, flags: CgroupFlags, word: str) -> None:
    with load_for(AttachType.CGROUP_SOCK_OPS, name="exclusive") as prog:
        link = prog.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS, flags=flags)
        assert link.id == 0
        with pytest.raises(NotSupportedError, match="BPF_PROG_ATTACH"):
            link.pin(pin_dir / "nope")
        (found,) = cgroup_programs(cgroup, attach_types=(AttachType.CGROUP_SOCK_OPS,))
        assert (found.id, found.attach_flags) == (prog.id, int(flags))
        if BPFTOOL and probes.bpftool_cgroup_query(cgroup) is None:  # bpftool as a second witness where it can
            shown = json.loads(subprocess.run([BPFTOOL, "-j", "cgroup", "show", cgroup], capture_output=True,
                                              text=True, check=True).stdout)
            assert [(p["id"], p["attach_flags"]) for p in shown] == [(prog.id, word)]
        link.close()
        assert attached_ids(cgroup, AttachType.CGROUP_SOCK_OPS) == []


def test_legacy_link_detaches_when_collected(cgroup: str) -> None:
    with load_for(AttachType.CGROUP_SOCK_OPS) as prog:
        prog.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS, flags=CgroupFlags.NONE)  # dropped at once
        assert attached_ids(cgroup, AttachType.CGROUP_SOCK_OPS) == []


def test_exclusive_attachment_in_the_way_is_named(cgroup: str) -> None:
    with load_for(AttachType.CGROUP_SOCK_OPS, name="first") as first, load_for(AttachType.CGROUP_SOCK_OPS, name="second") as second:
        with first.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS, flags=CgroupFlags.NONE):
            with pytest.raises(BPFError, match=f"program {first.id} is attached here exclusively") as caught:
                second.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS)
            assert caught.value.errno == errno.EPERM and "CAP_BPF" not in str(caught.value)
            child = os.path.join(cgroup, "child")
            os.mkdir(child)
            try:
                with pytest.raises(BPFError, match="ancestor cgroup .* forbids programs below it"):
                    second.attach_cgroup(child, AttachType.CGROUP_SOCK_OPS)
            finally:
                os.rmdir(child)
        with first.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS):
            with pytest.raises(BPFError, match="attached here with BPF_F_ALLOW_MULTI"):
                second.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS, flags=CgroupFlags.NONE)
        with first.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS, flags=CgroupFlags.ALLOW_MULTI):
            with pytest.raises(BPFError, match="already attached") as caught:
                first.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS, flags=CgroupFlags.ALLOW_MULTI)
            assert caught.value.errno in (errno.EINVAL, errno.EEXIST)  # EINVAL since 5.7


def test_type_mismatch_is_named(cgroup: str) -> None:
    with load_for(AttachType.CGROUP_SOCK_OPS) as prog:
        with pytest.raises(BPFError, match="CGROUP_INET_INGRESS takes CGROUP_SKB programs, not SOCK_OPS"):
            prog.attach_cgroup(cgroup, AttachType.CGROUP_INET_INGRESS)
    with load_for(AttachType.CGROUP_INET4_CONNECT) as prog:
        with pytest.raises(BPFError, match="expected_attach_type CGROUP_INET4_CONNECT; CGROUP_INET4_BIND takes"):
            prog.attach_cgroup(cgroup, AttachType.CGROUP_INET4_BIND)


def test_bad_arguments_fail_before_the_kernel(cgroup: str, tmp_path: Path) -> None:
    with load_for(AttachType.CGROUP_SOCK_OPS) as prog:
        with pytest.raises(ValueError, match="not a cgroup v2 directory"):
            prog.attach_cgroup(str(tmp_path), AttachType.CGROUP_SOCK_OPS)
        with pytest.raises(ValueError, match="no cgroup at"):
            prog.attach_cgroup(os.path.join(cgroup, "missing"), AttachType.CGROUP_SOCK_OPS)
        with pytest.raises(ValueError, match="SK_LOOKUP is not a cgroup attach type"):
            prog.attach_cgroup(cgroup, AttachType.SK_LOOKUP)
        with pytest.raises(ValueError, match="ALLOW_OVERRIDE and ALLOW_MULTI exclude each other"):
            prog.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS, flags=3)
        with pytest.raises(TypeError):
            prog.attach_cgroup(1.5, AttachType.CGROUP_SOCK_OPS)  # type: ignore[arg-type]


# ---- the programs at work, for sockets created in the cgroup -----------------------------------


def _listener_and_socket() -> list[socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return [listener, socket.socket()]


def test_connect_hook_refuses_then_allows_after_close(cgroup: str) -> None:
    with load_for(AttachType.CGROUP_INET4_CONNECT, value=0, name="deny") as deny:
        with deny.attach_cgroup(cgroup, AttachType.CGROUP_INET4_CONNECT):
            listener, client = sockets_in(cgroup, _listener_and_socket)
            with listener, client, pytest.raises(PermissionError):
                client.connect(listener.getsockname())
        listener, client = sockets_in(cgroup, _listener_and_socket)
        with listener, client:
            client.connect(listener.getsockname())
    outside = socket.socket()  # not in the cgroup: never affected
    outside.close()


def test_sock_ops_sees_connections_of_the_cgroup_only(cgroup: str) -> None:
    counter = Map.create(MapSpec(MapType.ARRAY, 4, 8, 1))
    a = Assembler().ldx(W, R1, R1, 0).jne(R1, 4, "out")  # BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB
    a.st(W, FP, -4, 0).ld_map_fd(R1, counter).mov64(R2, FP).add64(R2, -4).call("map_lookup_elem")
    a.jeq(R0, 0, "out").mov64(R1, 1).atomic_add(DW, R0, R1)
    a.label("out").mov64(R0, 1).exit()
    with counter, Program.load(ProgramSpec(ProgramType.SOCK_OPS, a, name="count_est")) as prog:
        with prog.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS):
            listener, client = sockets_in(cgroup, _listener_and_socket)
            with listener, client:
                client.connect(listener.getsockname())
                with socket.create_connection(listener.getsockname()):  # made outside the cgroup
                    pass
            assert int.from_bytes(counter[0], "little") == 1
            assert ctypes.sizeof(ctypes.c_uint64) == 8
