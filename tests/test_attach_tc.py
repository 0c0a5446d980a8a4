"""tc programs on a veth pair whose both ends are in namespaces the test creates: tcx links where
the kernel has them (6.6+), clsact + direct-action bpf filters over rtnetlink otherwise (or when
asked), each counted at work, detached on close, and the filters in the way named."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from scale import TIME

from pybpf import AttachType, LinkType, Map, MapSpec, MapType, ProgramType
from pybpf._sys.attrs import ProgQueryAttr
from pybpf._sys.constants import Cmd
from pybpf._sys.syscall import bpf_errno
from pybpf.testing.netns import VethPair, inside, veth_pair
from pybpf.asm import DW, FP, R0, R1, R2, W, Assembler
from pybpf.errors import BPFError, NotSupportedError
from pybpf.programs import Program, ProgramSpec

TC_ACT_OK = 0
PORT = 9917


def tcx_in_kernel() -> bool:
    """Raw probe: BPF_PROG_QUERY of TCX_INGRESS on loopback (index 1) works from Linux 6.6."""
    return bpf_errno(Cmd.PROG_QUERY, ProgQueryAttr(target_fd=1, attach_type=AttachType.TCX_INGRESS)) >= 0


@pytest.fixture(scope="module")
def pair() -> Iterator[VethPair]:
    with veth_pair() as made:
        yield made


@pytest.fixture
def counter() -> Iterator[Map]:
    with Map.create(MapSpec(MapType.ARRAY, 4, 8, 1)) as made:
        yield made


def counting(counter: Map, name: str = "tc_count") -> Program:
    a = Assembler().st(W, FP, -4, 0).ld_map_fd(R1, counter).mov64(R2, FP).add64(R2, -4).call("map_lookup_elem")
    a.jeq(R0, 0, "out").mov64(R1, 1).atomic_add(DW, R0, R1).label("out").mov64(R0, TC_ACT_OK).exit()
    return Program.load(ProgramSpec(ProgramType.SCHED_CLS, a, name=name))


def count(counter: Map) -> int:
    return int.from_bytes(counter[0], "little")


def send_datagrams(pair: VethPair, n: int = 3) -> None:
    """``n`` UDP datagrams from the peer side to the local side, each received."""
    receiver = pair.local.socket()
    sender = pair.peer.socket()
    with receiver, sender:
        receiver.bind((pair.local.ip, PORT))
        receiver.settimeout(5 * TIME)
        for i in range(n):
            sender.sendto(b"%d" % i, (pair.local.ip, PORT))
            receiver.recv(16)


def tc_filters(pair: VethPair, direction: str) -> str:
    return subprocess.run(["ip", "netns", "exec", pair.local.namespace, "tc", "filter", "show", "dev",
                           pair.local.ifname, direction], capture_output=True, text=True).stdout


def qdiscs(pair: VethPair) -> str:
    return subprocess.run(["ip", "netns", "exec", pair.local.namespace, "tc", "qdisc", "show", "dev",
                           pair.local.ifname], capture_output=True, text=True).stdout


@pytest.mark.parametrize("mechanism", ["tcx", "netlink"])
def test_attach_counts_ingress_and_detaches_on_close(pair: VethPair, counter: Map, mechanism: str) -> None:
    with counting(counter) as prog:
        if mechanism == "tcx" and not tcx_in_kernel():
            with inside(pair.local.namespace), pytest.raises(NotSupportedError, match="needs? Linux 6.6"):
                prog.attach_tc(pair.local.ifname, mechanism="tcx")
            return
        with inside(pair.local.namespace):
            link = prog.attach_tc(pair.local.ifname, "ingress", mechanism=mechanism)
        with link:
            send_datagrams(pair)
            seen = count(counter)
            assert seen >= 3
            if mechanism == "tcx":
                info = link.info()
                assert (info.type, info.attach_type, info.ifindex) == (LinkType.TCX, AttachType.TCX_INGRESS, pair.local.ifindex)
            else:
                assert "tc_count" in tc_filters(pair, "ingress") and "direct-action" in tc_filters(pair, "ingress")
        send_datagrams(pair)
        assert count(counter) == seen
        assert "clsact" not in qdiscs(pair)  # made by the netlink attach, removed with its last filter


def test_auto_takes_tcx_where_the_kernel_has_it(pair: VethPair, counter: Map) -> None:
    with counting(counter) as prog, inside(pair.local.namespace):
        with prog.attach_tc(pair.local.ifindex, "egress") as link:
            assert (link.id != 0) == tcx_in_kernel()


def test_netlink_filter_link_cannot_be_pinned(pair: VethPair, counter: Map, pin_dir: Path) -> None:
    with counting(counter) as prog:
        with inside(pair.local.namespace):
            link = prog.attach_tc(pair.local.ifname, "egress", mechanism="netlink")
        with link, pytest.raises(NotSupportedError, match="rtnetlink is no kernel link"):
            link.pin(pin_dir / "tc")


def test_filters_in_the_way_are_named(pair: VethPair, counter: Map) -> None:
    with counting(counter, "first") as first, counting(counter, "second") as second, inside(pair.local.namespace):
        with first.attach_tc(pair.local.ifname, priority=7) as held:
            with pytest.raises(BPFError, match="priority 7 is taken by the bpf filter 'first'"):
                second.attach_tc(pair.local.ifname, priority=7)
            with second.attach_tc(pair.local.ifname, priority=8):
                assert "pref 8" in tc_filters(pair, "ingress")
            assert held.id == 0
        with first.attach_tc(pair.local.ifname, priority=1):
            with pytest.raises(BPFError, match="runs first and nothing can be put before it"):
                second.attach_tc(pair.local.ifname, mechanism="netlink")
    assert "clsact" not in qdiscs(pair)


def test_a_clsact_made_by_someone_else_stays(pair: VethPair, counter: Map) -> None:
    ns, dev = pair.local.namespace, pair.local.ifname
    subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "clsact"], check=True)
    try:
        with counting(counter) as prog, inside(ns):
            with prog.attach_tc(dev, mechanism="netlink"):
                pass
        assert "clsact" in qdiscs(pair)
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "clsact"], check=True)


def test_an_ingress_qdisc_has_no_egress(pair: VethPair, counter: Map) -> None:
    ns, dev = pair.local.namespace, pair.local.ifname
    subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "ingress"], check=True)
    try:
        with counting(counter) as prog, inside(ns):
            with pytest.raises(BPFError, match="'ingress' qdisc, which has no egress hook"):
                prog.attach_tc(dev, "egress", mechanism="netlink")
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "ingress"], check=True)


def test_bad_arguments(pair: VethPair, counter: Map) -> None:
    with counting(counter) as prog, inside(pair.local.namespace):
        with pytest.raises(ValueError, match="direction must be"):
            prog.attach_tc(pair.local.ifname, "sideways")
        with pytest.raises(ValueError, match="no network interface named"):
            prog.attach_tc("nonexistent0")
        with pytest.raises(ValueError, match="priority"):
            prog.attach_tc(pair.local.ifname, priority=0)
        with pytest.raises(ValueError, match="tcx links have no priority"):
            prog.attach_tc(pair.local.ifname, mechanism="tcx", priority=3)
    with Program.load(ProgramSpec(ProgramType.SOCKET_FILTER, Assembler().mov64(R0, 0).exit())) as other:
        with pytest.raises(ValueError, match="SCHED_CLS programs, not SOCKET_FILTER"):
            other.attach_tc(pair.local.ifname)
