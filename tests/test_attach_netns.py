"""Attaching sk_lookup and flow_dissector programs to network namespaces the test creates (never
the machine's own): links, pinning, the programs at work, refusals in words."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybpf import AttachType, Link, LinkType, ProgramType
from pybpf.testing.netns import NETNS_DIR, inside, namespace
from pybpf.asm import R0, Assembler
from pybpf.errors import BPFError
from pybpf.programs import Program, ProgramSpec
from pybpf.programs.netns import netns_programs

SK_DROP, SK_PASS = 0, 1
BPF_OK = 0


@pytest.fixture
def netns() -> Iterator[str]:
    with namespace() as name:
        yield name


def sk_lookup(verdict: int, name: str = "lookup") -> Program:
    return Program.load(ProgramSpec(ProgramType.SK_LOOKUP, Assembler().mov64(R0, verdict).exit(), name=name,
                                    expected_attach_type=AttachType.SK_LOOKUP))


def flow_dissector(name: str = "dissect") -> Program:
    return Program.load(ProgramSpec(ProgramType.FLOW_DISSECTOR, Assembler().mov64(R0, BPF_OK).exit(), name=name))


def connect_in(netns: str, address: tuple[str, int]) -> int:
    """0 if a TCP connect from inside ``netns`` succeeds, else its errno."""
    with inside(netns):
        sock = socket.socket()
    with sock:
        sock.settimeout(5)
        return sock.connect_ex(address)


def test_sk_lookup_link_by_path_drops_then_lets_go(netns: str) -> None:
    with inside(netns):
        listener = socket.create_server(("127.0.0.1", 0))
    with listener, sk_lookup(SK_DROP) as prog:
        address = listener.getsockname()
        assert connect_in(netns, address) == 0
        listener.accept()[0].close()
        with prog.attach_netns(os.path.join(NETNS_DIR, netns)) as link:
            info = link.info()
            assert (info.type, info.attach_type, info.prog_id) == (LinkType.NETNS, AttachType.SK_LOOKUP, prog.id)
            assert info.netns_ino == os.stat(os.path.join(NETNS_DIR, netns)).st_ino
            assert netns_programs(os.path.join(NETNS_DIR, netns))[AttachType.SK_LOOKUP] == [prog.id]
            assert connect_in(netns, address) == errno.ECONNREFUSED
        assert connect_in(netns, address) == 0


def test_attach_to_this_threads_namespace_and_by_fd(netns: str, pin_dir: Path) -> None:
    with sk_lookup(SK_PASS) as prog:
        with inside(netns):
            link = prog.attach_netns()
        with link:
            assert link.info().netns_ino == os.stat(os.path.join(NETNS_DIR, netns)).st_ino
            link.pin(pin_dir / "lookup")
        with Link.from_pin(pin_dir / "lookup") as again:
            assert again.info().prog_id == prog.id
        fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
        try:
            with prog.attach_netns(fd) as by_fd:
                assert by_fd.info().attach_type == AttachType.SK_LOOKUP
            os.fstat(fd)  # still the caller's
        finally:
            os.close(fd)


def test_one_flow_dissector_per_namespace(netns: str) -> None:
    path = os.path.join(NETNS_DIR, netns)
    with flow_dissector("first") as first, flow_dissector("second") as second:
        with first.attach_netns(path) as link:
            assert link.info().attach_type == AttachType.FLOW_DISSECTOR
            assert netns_programs(path)[AttachType.FLOW_DISSECTOR] == [first.id]
            with pytest.raises(BPFError, match=f"a flow dissector \\(program {first.id}\\) is already attached"):
                second.attach_netns(path)
        assert netns_programs(path)[AttachType.FLOW_DISSECTOR] == []


def test_refusals_before_the_kernel(netns: str, tmp_path: Path) -> None:
    with Program.load(ProgramSpec(ProgramType.SOCKET_FILTER, Assembler().mov64(R0, 0).exit())) as other:
        with pytest.raises(ValueError, match="SK_LOOKUP or FLOW_DISSECTOR programs, not SOCKET_FILTER"):
            other.attach_netns(os.path.join(NETNS_DIR, netns))
    with sk_lookup(SK_PASS) as prog:
        (tmp_path / "file").write_text("")
        with pytest.raises(ValueError, match="is not a network namespace"):
            prog.attach_netns(tmp_path / "file")
        with pytest.raises(ValueError, match="no namespace at"):
            prog.attach_netns(tmp_path / "missing")
        with pytest.raises(ValueError, match="is not a network namespace"):
            prog.attach_netns("/proc/self/ns/mnt")


def test_a_program_of_unknown_expected_attach_type_is_left_to_the_kernel(netns: str) -> None:
    prog = Program.load(ProgramSpec(ProgramType.SK_LOOKUP, Assembler().mov64(R0, SK_PASS).exit(),
                                    expected_attach_type=AttachType.SK_LOOKUP))
    with prog:
        prog.expected_attach_type = None  # as if opened by id: the kernel checks the real one
        with prog.attach_netns(os.path.join(NETNS_DIR, netns)):
            pass
