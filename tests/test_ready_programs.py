"""Ready-made programs on the real kernel: they load, match clang where the seed gives C, and
move real bytes (loopback TCP) or steer real connections (SO_REUSEPORT on 127.0.0.1)."""

from __future__ import annotations

import ctypes
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import probes
import pytest

import pybpf.programs as programs
from pybpf import AttachType, Map, MapType, ProgramType, ReuseportSockArray, SockHash, SockMap
from pybpf.asm import Insn
from pybpf.programs import Program, ready

CLANG = shutil.which("clang-16") or shutil.which("clang")
TIMEOUT = 5.0

XSK_REDIR_C = """
struct xdp_md { unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex; };
struct { int (*type)[17]; int (*max_entries)[64]; unsigned int *key; unsigned int *value; }
    xsks_map __attribute__((section(".maps"), used));
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *) 1;
static long (*bpf_redirect_map)(void *map, unsigned long long key, unsigned long long flags) = (void *) 51;

__attribute__((section("xdp"), used)) int xsk_redir_prog(struct xdp_md *ctx)
{
    unsigned int index = ctx->rx_queue_index;

    if (bpf_map_lookup_elem(&xsks_map, &index))
        return bpf_redirect_map(&xsks_map, index, 0);
    return 2; /* XDP_PASS */
}
"""


@pytest.mark.nokernel
@pytest.mark.skipif(CLANG is None, reason="clang with the BPF target is not installed")
def test_xsk_redirect_is_the_seed_program_as_clang_builds_it(tmp_path: Path) -> None:
    from elftools.elf.elffile import ELFFile

    (tmp_path / "xsk.c").write_text(XSK_REDIR_C)
    subprocess.run([CLANG, "-target", "bpf", "-O2", "-c", str(tmp_path / "xsk.c"), "-o", str(tmp_path / "xsk.o")],
                   check=True, capture_output=True)
    with (tmp_path / "xsk.o").open("rb") as f:
        clang = Insn.unpack(ELFFile(f).get_section_by_name("xdp").data())
    ours = ready._xsk_redirect_code(7).assemble()
    # clang leaves map references to the loader (imm 0, no pseudo src): compare everything else
    strip = [(i.code, i.dst, i.off, 0 if i.wide else i.imm) for i in ours]
    assert strip == [(i.code, i.dst, i.off, 0 if i.wide else i.imm) for i in clang]
    assert [(i.src, i.imm) for i in ours if i.wide] == [(1, 7), (1, 7)]


# ---- loading ---------------------------------------------------------------------------------


@pytest.fixture
def maps() -> Iterator[dict[str, Map]]:
    with ExitStack() as stack:
        made = {
            "sockmap": SockMap.create(4),
            "sockhash": SockHash.create(4, key_size=8),
            "sockhash13": SockHash.create(4, key_size=13),
            "peers": Map.create(type=MapType.HASH, key_size=8, value_size=8, max_entries=8),
            "xsks": Map.create(type=MapType.XSKMAP, key_size=4, value_size=4, max_entries=4),
            "array": ReuseportSockArray.create(4),
            "control": Map.create(type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1, value=ctypes.c_uint32),
        }
        for m in made.values():
            stack.enter_context(m)
        yield made


READY: list[tuple[str, Callable[[dict[str, Map]], Program], ProgramType]] = [
    ("sk_skb_redirect map", lambda m: programs.sk_skb_redirect(m["sockmap"], 3), ProgramType.SK_SKB),
    ("sk_skb_redirect hash", lambda m: programs.sk_skb_redirect(m["sockhash"], 99, ingress=True), ProgramType.SK_SKB),
    ("sk_skb_redirect from_fd", lambda m: programs.sk_skb_redirect(Map.from_fd(m["sockhash13"].fd), b"thirteen byte"),
     ProgramType.SK_SKB),
    ("sk_msg_redirect map", lambda m: programs.sk_msg_redirect(m["sockmap"], 1, ingress=True), ProgramType.SK_MSG),
    ("sk_msg_redirect hash", lambda m: programs.sk_msg_redirect(m["sockhash13"], b"thirteen byte"), ProgramType.SK_MSG),
    ("sk_skb_pass", lambda m: programs.sk_skb_pass(), ProgramType.SK_SKB),
    ("sk_skb_drop", lambda m: programs.sk_skb_drop(), ProgramType.SK_SKB),
    ("sk_msg_pass", lambda m: programs.sk_msg_pass(), ProgramType.SK_MSG),
    ("sk_msg_drop", lambda m: programs.sk_msg_drop(), ProgramType.SK_MSG),
    ("sk_skb_parser", lambda m: programs.sk_skb_parser(), ProgramType.SK_SKB),
    ("splice_verdict", lambda m: programs.splice_verdict(m["sockhash"], m["peers"]), ProgramType.SK_SKB),
    ("xsk_redirect", lambda m: programs.xsk_redirect(m["xsks"]), ProgramType.XDP),
    ("reuseport_select", lambda m: programs.reuseport_select(m["array"], m["control"]), ProgramType.SK_REUSEPORT),
    ("reuseport_hash", lambda m: programs.reuseport_hash(m["array"], m["control"]), ProgramType.SK_REUSEPORT),
]


@pytest.mark.parametrize("make, prog_type", [(m, t) for _, m, t in READY], ids=[n for n, _, _ in READY])
def test_ready_programs_load(no_fd_leak: None, maps: dict[str, Map], make: Callable[..., Program], prog_type: ProgramType) -> None:
    with make(maps) as prog:
        assert prog.type == prog_type
        assert prog.info().verified_insns > 0 or probes.release() < (5, 16)  # the field came with 5.16


def test_ready_programs_check_their_maps(no_fd_leak: None, maps: dict[str, Map]) -> None:
    with pytest.raises(ValueError, match="XSKMAP"):
        programs.xsk_redirect(maps["sockmap"])
    with pytest.raises(ValueError, match="SOCKMAP or SOCKHASH"):
        programs.sk_skb_redirect(maps["peers"])
    with pytest.raises(ValueError, match="8-byte socket cookies"):
        programs.splice_verdict(maps["sockhash13"], maps["peers"])
    with pytest.raises(ValueError, match="REUSEPORT_SOCKARRAY"):
        programs.reuseport_select(maps["sockmap"], maps["control"])
    with pytest.raises(ValueError, match="key must be 8 bytes, got 3"):
        programs.sk_msg_redirect(maps["sockhash"], b"abc")
    with pytest.raises(ValueError, match="out of range for 4 bytes"):
        programs.sk_skb_redirect(maps["sockmap"], 1 << 32)
    with pytest.raises(TypeError, match="Map"):
        programs.sk_skb_redirect("sockmap")
    with pytest.raises(TypeError, match=r"count_map must be a Map \(Map.from_fd"):  # a count is not a map
        programs.reuseport_hash(maps["array"], 3)


# ---- traffic ---------------------------------------------------------------------------------


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on 127.0.0.1: (client, accepted server side)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        server, _ = listener.accept()
    server.settimeout(TIMEOUT)
    return client, server


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read ``size`` bytes within ``TIMEOUT`` seconds (socket.timeout otherwise)."""
    sock.settimeout(TIMEOUT)
    chunks, got, deadline = [], 0, time.monotonic() + TIMEOUT
    while got < size and time.monotonic() < deadline:
        chunk = sock.recv(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def nothing_arrives(sock: socket.socket, wait: float = 0.2) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(100) == b""
    except TimeoutError:
        return True


@pytest.fixture
def two_pairs() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """(client, a, b, server): client-a and b-server are connected; a and b are a proxy's two sides."""
    client, a = tcp_pair()
    b, server = tcp_pair()
    with client, a, b, server:
        yield client, a, b, server


SPLICE_ATTACH = {
    "skb_verdict": (AttachType.SK_SKB_VERDICT,),
    "stream_verdict": (AttachType.SK_SKB_STREAM_VERDICT,),
    "parser_and_stream_verdict": (AttachType.SK_SKB_STREAM_PARSER, AttachType.SK_SKB_STREAM_VERDICT),
}


@pytest.mark.parametrize("attach", SPLICE_ATTACH.values(), ids=SPLICE_ATTACH.keys())
def test_splice_moves_bytes_both_ways(no_fd_leak: None, two_pairs: Any, attach: tuple[AttachType, ...]) -> None:
    for kind in attach:
        probes.skip_if(probes.sockmap_attach(kind.name))
    client, a, b, server = two_pairs
    with SockHash.create(8, key_size=8) as sockhash, \
            Map.create(type=MapType.HASH, key_size=8, value_size=8, max_entries=8, value=ctypes.c_uint64) as peers, \
            programs.splice_verdict(sockhash, peers) as verdict, programs.sk_skb_parser() as parser:
        for kind in attach:
            (parser if kind == AttachType.SK_SKB_STREAM_PARSER else verdict).attach(sockhash, kind)
        cookie_a, cookie_b = programs.splice_pair(sockhash, peers, a, b)
        assert peers[cookie_a] == cookie_b and sockhash[cookie_b] == cookie_b
        payload = bytes(range(256)) * 4096  # 1 MiB
        client.sendall(payload)
        assert recv_exactly(server, len(payload)) == payload
        server.sendall(b"and back")
        assert recv_exactly(client, 8) == b"and back"
        assert nothing_arrives(a, 0.05) and nothing_arrives(b, 0.05)  # the proxy saw nothing


def _verdict() -> AttachType:
    """SK_SKB_VERDICT where the kernel has it (5.13+), else the stream verdict that came before it:
    what a program written for either runs under."""
    return AttachType.SK_SKB_VERDICT if probes.sockmap_attach("SK_SKB_VERDICT") is None else AttachType.SK_SKB_STREAM_VERDICT


def test_sk_skb_redirect_sockmap_egress(no_fd_leak: None, two_pairs: Any) -> None:
    client, a, b, server = two_pairs
    with SockMap.create(2) as sockmap, programs.sk_skb_redirect(sockmap, 1) as verdict:
        verdict.attach(sockmap, _verdict())
        sockmap[0] = a
        sockmap[1] = b
        client.sendall(b"to the server")
        assert recv_exactly(server, 13) == b"to the server"


def test_sk_skb_redirect_sockhash_ingress(no_fd_leak: None, two_pairs: Any) -> None:
    client, a, b, _ = two_pairs
    key = b"thirteen byte"
    with SockHash.create(2, key_size=13) as sockhash, programs.sk_skb_redirect(sockhash, key, ingress=True) as verdict:
        verdict.attach(sockhash, _verdict())
        sockhash[b"the other one"] = a
        sockhash[key] = b
        client.sendall(b"into b")
        assert recv_exactly(b, 6) == b"into b"


@pytest.mark.parametrize("sock_map", [SockMap, SockHash], ids=["sockmap", "sockhash"])
def test_sk_msg_redirect(no_fd_leak: None, two_pairs: Any, sock_map: type[Map]) -> None:
    client, _, b, server = two_pairs
    with sock_map.create(2) as target, programs.sk_msg_redirect(target, 1) as egress, \
            programs.sk_msg_redirect(target, 1, ingress=True) as ingress:
        target[1] = b
        egress.attach(target, AttachType.SK_MSG_VERDICT)
        target[0] = client
        client.sendall(b"sent out of b")
        assert recv_exactly(server, 13) == b"sent out of b"
        del target[0]
        ingress.attach(target, AttachType.SK_MSG_VERDICT)  # replaces egress for sockets added from now
        target[0] = client
        client.sendall(b"queued on b")
        assert recv_exactly(b, 11) == b"queued on b"


def test_pass_and_drop_verdicts(no_fd_leak: None, two_pairs: Any) -> None:
    client, a, b, server = two_pairs
    with SockMap.create(1) as passing, SockMap.create(1) as dropping, SockMap.create(1) as refusing, \
            programs.sk_skb_pass() as skb_pass, programs.sk_skb_drop() as skb_drop, programs.sk_msg_drop() as msg_drop:
        skb_pass.attach(passing, _verdict())
        skb_drop.attach(dropping, _verdict())
        msg_drop.attach(refusing, AttachType.SK_MSG_VERDICT)
        passing[0] = a
        client.sendall(b"kept")
        assert recv_exactly(a, 4) == b"kept"
        dropping[0] = server
        b.sendall(b"lost")
        assert nothing_arrives(server)
        refusing[0] = client
        with pytest.raises(PermissionError):
            client.send(b"refused")


# ---- SO_REUSEPORT --------------------------------------------------------------------------------


@pytest.fixture
def listeners() -> Iterator[list[socket.socket]]:
    """Three SO_REUSEPORT TCP listeners on one 127.0.0.1 port (non-blocking)."""
    with ExitStack() as stack:
        socks: list[socket.socket] = []
        port = 0
        for _ in range(3):
            sock = stack.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            port = sock.getsockname()[1]
            sock.listen(64)
            sock.setblocking(False)
            socks.append(sock)
        yield socks


def connections_per_listener(listeners: list[socket.socket], count: int) -> list[int]:
    """Open ``count`` connections to the group's port; how many each listener accepted."""
    seen = [0] * len(listeners)
    address = listeners[0].getsockname()
    for _ in range(count):
        with socket.create_connection(address, timeout=TIMEOUT):
            deadline = time.monotonic() + TIMEOUT
            while sum(seen) < count and time.monotonic() < deadline:
                accepted = [i for i, sock in enumerate(listeners) if _accept(sock)]
                if accepted:
                    seen[accepted[0]] += 1
                    break
    return seen


def _accept(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def test_reuseport_select_steers_connections(no_fd_leak: None, listeners: list[socket.socket]) -> None:
    with ReuseportSockArray.create(4) as array, \
            Map.create(type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1, value=ctypes.c_uint32) as control, \
            programs.reuseport_select(array, control) as select:
        for index, sock in enumerate(listeners):
            array[index] = sock
        select.attach_reuseport(listeners[0])
        control[0] = 1
        assert connections_per_listener(listeners, 8) == [0, 8, 0]
        control[0] = 2
        assert connections_per_listener(listeners, 8) == [0, 0, 8]
        control[0] = 3  # an empty slot: the kernel's own selection takes over
        assert sum(connections_per_listener(listeners, 8)) == 8
        select.detach_reuseport(listeners[0])


def test_reuseport_hash_spreads_over_live_sockets(no_fd_leak: None, listeners: list[socket.socket]) -> None:
    with ReuseportSockArray.create(4) as array, \
            Map.create(type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1, value=ctypes.c_uint32) as count, \
            programs.reuseport_hash(array, count) as select:
        for index, sock in enumerate(listeners):
            array[index] = sock
        select.attach_reuseport(listeners[0])
        count[0] = 1
        assert connections_per_listener(listeners, 8) == [8, 0, 0]
        count[0] = 3
        spread = connections_per_listener(listeners, 40)
        assert sum(spread) == 40 and all(spread), spread
