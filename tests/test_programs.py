"""Programs on the real kernel: load, verifier errors, identity, test runs, attach to socket maps,
links, XDP on a veth inside namespaces the test creates, reuseport attach errors."""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import probes
import pytest

from pybpf import AttachType, LinkType, Map, MapType, ProgramType, SockHash, SockMap, features
from pybpf.asm import DW, FP, R0, R1, R2, R6, W, Assembler, B
from pybpf.errors import BPFError, NotSupportedError, VerifierError
from pybpf.programs import Link, Program, ProgramSpec, XdpMode, query
from pybpf.programs import ready

XDP_PASS = 2


def load(prog_type: ProgramType, a: Assembler, name: str = "") -> Program:
    return Program.load(ProgramSpec(prog_type, a, name=name))


def returning(prog_type: ProgramType, value: int, name: str = "") -> Program:
    return load(prog_type, Assembler().mov64(R0, value).exit(), name)


def counter_program(counter: Map) -> Program:
    """XDP: count every frame in ``counter[0]`` (u64) and pass it."""
    a = Assembler().st(W, FP, -4, 0).ld_map_fd(R1, counter).mov64(R2, FP).add64(R2, -4).call("map_lookup_elem")
    a.jeq(R0, 0, "out").mov64(R1, 1).atomic_add(DW, R0, R1).label("out").mov64(R0, XDP_PASS).exit()
    return load(ProgramType.XDP, a, "count")


# ---- specs (no kernel) ------------------------------------------------------------------------


@pytest.mark.nokernel
@pytest.mark.parametrize(
    "changes, field",
    [
        ({"name": "a_name_longer_than_15"}, "name"),
        ({"name": "bad-name"}, "name"),
        ({"insns": b""}, "insns"),
        ({"insns": b"\0" * 12}, "insns"),
        ({"type": 0}, "type"),
        ({"license": "G\0PL"}, "license"),
    ],
)
def test_spec_validate_names_the_field(changes: dict[str, Any], field: str) -> None:
    spec = ProgramSpec(ProgramType.XDP, Assembler().mov64(R0, 2).exit()).copy(**changes)
    with pytest.raises(ValueError, match=f"ProgramSpec.{field}"):
        spec.validate()


@pytest.mark.nokernel
def test_spec_takes_an_assembler_insns_or_bytes() -> None:
    a = Assembler().mov64(R0, 2).exit()
    code = bytes(a)
    for insns in (a, a.assemble(), code):
        assert ProgramSpec(ProgramType.XDP, insns).instructions() == code


# ---- loading ---------------------------------------------------------------------------------


def test_load_identity_and_info(no_fd_leak: None) -> None:
    with Map.create(type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1) as counter:
        with counter_program(counter) as prog:
            assert prog.type == ProgramType.XDP and prog.name == "count"
            info = prog.info()
            assert info.id == prog.id > 0
            assert info.type == ProgramType.XDP and info.name == "count"
            assert len(prog.tag) == 16 and prog.tag == info.tag
            assert info.map_ids == (counter.id,)
            assert info.gpl_compatible
            assert "count" in repr(prog)


def test_verifier_error_carries_the_log(no_fd_leak: None) -> None:
    spec = ProgramSpec(ProgramType.XDP, Assembler().exit(), name="no_r0")
    with pytest.raises(VerifierError) as caught:
        Program.load(spec)
    err = caught.value
    assert err.errno == errno.EACCES
    assert "R0 !read_ok" in err.log and "R0 !read_ok" in str(err)
    assert "'no_r0'" in str(err)


def test_bad_map_fd_is_reported(no_fd_leak: None) -> None:
    a = Assembler().ld_map_fd(R1, 999).mov64(R0, 0).exit()
    with pytest.raises(BPFError) as caught:
        load(ProgramType.XDP, a, "bad_fd")
    assert caught.value.errno == errno.EBADF


def test_verifier_log_on_request_grows_past_the_first_buffer(no_fd_leak: None) -> None:
    a = Assembler()
    for i in range(3000):
        a.mov64(R0, i)
    with Program.load(ProgramSpec(ProgramType.XDP, a.exit(), name="long"), log_level=2) as prog:
        assert len(prog.verifier_log) > 1 << 16
        assert "processed 3001 insns" in prog.verifier_log
    with returning(ProgramType.XDP, XDP_PASS) as quiet:
        assert quiet.verifier_log == ""


def test_pin_from_pin_from_id_from_fd(no_fd_leak: None, pin_dir: Path) -> None:
    with returning(ProgramType.XDP, XDP_PASS, "pinned") as prog:
        prog.pin(pin_dir / "prog")
        opened = [Program.from_pin(pin_dir / "prog"), Program.from_id(prog.id), Program.from_fd(prog.fd)]
        for other in opened:
            assert other.id == prog.id and other.name == "pinned" and other.type == ProgramType.XDP
            assert other.fd != prog.fd
            other.close()
            assert other.closed
            other.close()
            with pytest.raises(ValueError, match="closed"):
                other.fd
        os.fstat(prog.fd)  # from_fd duplicated: the original stays open


def test_finalizer_closes_a_forgotten_program(no_fd_leak: None) -> None:
    prog = returning(ProgramType.XDP, XDP_PASS)
    fd = prog.fd
    del prog
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


# ---- test runs -------------------------------------------------------------------------------


def test_run_xdp(no_fd_leak: None) -> None:
    frame = bytes(range(64))
    with returning(ProgramType.XDP, XDP_PASS) as prog:
        result = prog.test_run(frame, repeat=10)
        assert result.retval == XDP_PASS
        assert result.data == frame
        assert result.duration >= 0
        retval, data, _ = result
        assert (retval, data) == (XDP_PASS, frame)


def test_run_socket_filter_loads_packet_bytes(no_fd_leak: None) -> None:
    a = Assembler().mov64(R6, R1).ld_abs(B, 1).exit()  # a socket filter's offset 0 follows the Ethernet header
    with load(ProgramType.SOCKET_FILTER, a) as prog:
        assert prog.test_run(bytes(15) + b"\x2a" + bytes(48)).retval == 0x2A


def test_run_unsupported_type(no_fd_leak: None) -> None:
    with ready.sk_msg_pass() as prog, pytest.raises(NotSupportedError):
        prog.test_run(bytes(64))


# ---- socket maps -----------------------------------------------------------------------------

SOCKET_MAPS = [pytest.param(SockMap, id="sockmap"), pytest.param(SockHash, id="sockhash")]
ATTACH = [
    (AttachType.SK_MSG_VERDICT, ProgramType.SK_MSG),
    (AttachType.SK_SKB_STREAM_PARSER, ProgramType.SK_SKB),
    (AttachType.SK_SKB_STREAM_VERDICT, ProgramType.SK_SKB),
    (AttachType.SK_SKB_VERDICT, ProgramType.SK_SKB),
]


@pytest.fixture(params=SOCKET_MAPS)
def sock_map(request: pytest.FixtureRequest) -> Iterator[Map]:
    with request.param.create(4) as m:
        yield m


@pytest.mark.parametrize("attach_type, prog_type", ATTACH, ids=[t.name for t, _ in ATTACH])
def test_attach_and_detach(no_fd_leak: None, sock_map: Map, attach_type: AttachType, prog_type: ProgramType) -> None:
    with returning(prog_type, 1, "verdict") as prog:
        missing = probes.sockmap_attach(attach_type.name)
        if missing:  # the kernel predates the attach type: pybpf says so, naming the release
            with pytest.raises(NotSupportedError, match=r"need Linux \d+\.\d+"):
                prog.attach(sock_map, attach_type)
            probes.skip(missing)
        prog.attach(sock_map, attach_type)
        if probes.sockmap_query() is None:
            assert query(sock_map, attach_type) == [prog.id]
        else:  # before 6.0 a socket map's programs cannot be listed: said so; detach proves the attach
            with pytest.raises(NotSupportedError, match="need Linux 6.0"):
                query(sock_map, attach_type)
        prog.detach(sock_map, attach_type)
        if probes.sockmap_query() is None:
            assert query(sock_map, attach_type) == []
        with pytest.raises(BPFError, match="not attached") as caught:
            prog.detach(sock_map, attach_type)
        assert caught.value.errno == errno.ENOENT


def test_stream_verdict_and_skb_verdict_exclude_each_other(no_fd_leak: None, sock_map: Map) -> None:
    probes.skip_if(probes.sockmap_attach("SK_SKB_VERDICT") or probes.sockmap_query())  # the message asks which is there
    with returning(ProgramType.SK_SKB, 1) as first, returning(ProgramType.SK_SKB, 1) as second:
        first.attach(sock_map, AttachType.SK_SKB_STREAM_VERDICT)
        with pytest.raises(BPFError, match="exclude each other") as caught:
            second.attach(sock_map, AttachType.SK_SKB_VERDICT)
        assert caught.value.errno == errno.EBUSY
        assert "SK_SKB_STREAM_VERDICT" in str(caught.value)
        first.detach(sock_map, AttachType.SK_SKB_STREAM_VERDICT)
        second.attach(sock_map, AttachType.SK_SKB_VERDICT)
        second.detach(sock_map, AttachType.SK_SKB_VERDICT)


def test_wrong_program_type_names_the_expected_one(no_fd_leak: None, sock_map: Map) -> None:
    with returning(ProgramType.SK_SKB, 1) as skb, returning(ProgramType.XDP, XDP_PASS) as xdp:
        with pytest.raises(BPFError, match="SK_MSG_VERDICT takes SK_MSG programs, not SK_SKB") as caught:
            skb.attach(sock_map, AttachType.SK_MSG_VERDICT)
        assert caught.value.errno == errno.EINVAL
        with pytest.raises(BPFError, match="takes SK_SKB programs, not XDP"):
            xdp.attach(sock_map, AttachType.SK_SKB_VERDICT)
        with pytest.raises(BPFError, match="a socket map takes the attach types"):
            skb.attach(sock_map, AttachType.XDP)


def test_target_must_be_a_socket_map(no_fd_leak: None) -> None:
    with Map.create(type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1) as array:
        with returning(ProgramType.SK_SKB, 1) as prog, pytest.raises(BPFError, match="SOCKMAP or SOCKHASH"):
            prog.attach(array, AttachType.SK_SKB_VERDICT)
        with returning(ProgramType.SK_SKB, 1) as prog, pytest.raises(TypeError, match="fd"):
            prog.attach(object(), AttachType.SK_SKB_VERDICT)


def _require_sockmap_links(prog: Program, target: Map, kind: AttachType) -> None:
    """Before 6.10 the kernel has no sockmap links: prove the refusal is clear, then skip."""
    reason = probes.sockmap_links()
    if reason is None:
        return
    with pytest.raises(NotSupportedError, match="6.10"):
        prog.link(target, kind)
    probes.skip(reason)


def test_links_on_socket_maps(no_fd_leak: None, sock_map: Map, pin_dir: Path) -> None:
    kind = AttachType.SK_SKB_VERDICT
    with returning(ProgramType.SK_SKB, 1, "first") as first, returning(ProgramType.SK_SKB, 1, "second") as second:
        _require_sockmap_links(first, sock_map, kind)
        with first.link(sock_map, kind) as link:
            info = link.info()
            assert (info.type, info.prog_id, info.map_id, info.attach_type) == (LinkType.SOCKMAP, first.id, sock_map.id, kind)
            assert query(sock_map, kind) == [first.id]
            with pytest.raises(BPFError, match="a link already holds") as caught:
                second.attach(sock_map, kind)
            assert caught.value.errno == errno.EBUSY
            with pytest.raises(BPFError, match="exclude each other"):
                second.link(sock_map, AttachType.SK_SKB_STREAM_VERDICT)
            link.update(second)
            assert link.info().prog_id == second.id and query(sock_map, kind) == [second.id]
            with pytest.raises(BPFError):
                link.update(first, old=first)  # BPF_F_REPLACE: `first` is no longer current
            link.pin(pin_dir / "link")
            with Link.from_pin(pin_dir / "link") as again, Link.from_id(link.id) as by_id:
                assert again.id == by_id.id == link.id
        assert query(sock_map, kind) == [second.id]  # the pin keeps it attached
        with Link.from_pin(pin_dir / "link") as pinned:
            pinned.detach()
            assert pinned.info().map_id == 0
        assert query(sock_map, kind) == []


def test_closing_a_link_detaches(no_fd_leak: None, sock_map: Map) -> None:
    with returning(ProgramType.SK_MSG, 1) as prog:
        _require_sockmap_links(prog, sock_map, AttachType.SK_MSG_VERDICT)
        link = prog.link(sock_map, AttachType.SK_MSG_VERDICT)
        assert query(sock_map, AttachType.SK_MSG_VERDICT) == [prog.id]
        link.close()
        assert link.closed
        assert query(sock_map, AttachType.SK_MSG_VERDICT) == []


# ---- XDP ---------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def in_netns(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on a thread that entered network namespace ``name``; sockets it makes stay there."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as err:  # handed to the caller
            box["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10).stdout


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth (10.77.0.1 in the first, 10.77.0.2 on "vb" in the second)."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's ip")
    tag = uuid.uuid4().hex[:8]
    ns_a, ns_b = f"pybpf-{tag}-a", f"pybpf-{tag}-b"
    try:
        _ip("netns", "add", ns_a)
        _ip("netns", "add", ns_b)
        _ip("link", "add", "va", "netns", ns_a, "type", "veth", "peer", "name", "vb", "netns", ns_b)
        for ns, dev, addr in ((ns_a, "va", "10.77.0.1/24"), (ns_b, "vb", "10.77.0.2/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        yield ns_a, ns_b
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _udp_through(ns_a: str, ns_b: str) -> bytes:
    rx = in_netns(ns_b, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    tx = in_netns(ns_a, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("10.77.0.2", 0))
        rx.settimeout(3)
        tx.sendto(b"through", rx.getsockname())
        return rx.recv(100)


@pytest.mark.parametrize("mode", [XdpMode.AUTO, XdpMode.SKB], ids=["auto", "skb"])
def test_attach_xdp_in_a_namespace(no_fd_leak: None, veth: tuple[str, str], mode: XdpMode) -> None:
    ns_a, ns_b = veth
    with Map.create(type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1, value=ctypes.c_uint64) as counter, \
            counter_program(counter) as prog:
        with in_netns(ns_b, prog.attach_xdp, "vb", mode) as link:
            info = link.info()
            assert (info.type, info.prog_id) == (LinkType.XDP, prog.id)
            assert "prog/xdp id %d" % prog.id in _ip("-n", ns_b, "-d", "link", "show", "vb")
            with pytest.raises(BPFError, match="already attached") as caught:
                in_netns(ns_b, prog.attach_xdp, info.ifindex, mode)
            assert caught.value.errno == errno.EBUSY
            assert _udp_through(ns_a, ns_b) == b"through"
            assert counter[0] >= 1
        assert "prog/xdp" not in _ip("-n", ns_b, "-d", "link", "show", "vb")


def test_xsk_redirect_passes_frames_without_a_socket(no_fd_leak: None, veth: tuple[str, str]) -> None:
    ns_a, ns_b = veth
    with Map.create(type=MapType.XSKMAP, key_size=4, value_size=4, max_entries=4) as xsks, \
            Map.create(type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1, value=ctypes.c_uint64) as counter, \
            ready.xsk_redirect(xsks) as redirect, counter_program(counter) as count:
        with in_netns(ns_b, count.attach_xdp, "vb", XdpMode.SKB) as link:
            link.update(redirect)
            assert link.info().prog_id == redirect.id
            frozen = counter[0]
            assert _udp_through(ns_a, ns_b) == b"through"
            assert counter[0] == frozen  # the counter no longer runs


def test_attach_xdp_checks_the_interface_first(no_fd_leak: None) -> None:
    with returning(ProgramType.XDP, XDP_PASS) as prog:
        with pytest.raises(ValueError, match="no network interface named 'pybpf-none0'"):
            prog.attach_xdp("pybpf-none0")
        with pytest.raises(ValueError, match="positive"):
            prog.attach_xdp(0)


def test_attach_xdp_refuses_other_program_types(no_fd_leak: None) -> None:
    with returning(ProgramType.SK_SKB, 1) as prog, pytest.raises(BPFError, match="XDP takes XDP programs"):
        prog.attach_xdp("lo")


# ---- SO_REUSEPORT ------------------------------------------------------------------------------


def test_reuseport_attach_errors_say_why(no_fd_leak: None) -> None:
    with returning(ProgramType.SK_REUSEPORT, 1) as selector, returning(ProgramType.XDP, XDP_PASS) as xdp:
        with socket.socket() as plain:
            with pytest.raises(BPFError, match="does not have SO_REUSEPORT"):
                selector.attach_reuseport(plain)
            with pytest.raises(BPFError, match="in no SO_REUSEPORT group"):
                selector.detach_reuseport(plain)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(BPFError, match="takes SK_REUSEPORT or SOCKET_FILTER programs, not XDP"):
                xdp.attach_reuseport(sock)
            selector.attach_reuseport(sock.fileno())
            selector.detach_reuseport(sock)
            with pytest.raises(BPFError, match="has no program") as caught:
                selector.detach_reuseport(sock)
            assert caught.value.errno == errno.ENOENT
