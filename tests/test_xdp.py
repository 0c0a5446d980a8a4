"""AF_XDP on the real kernel: a veth pair between two namespaces made per test, an XDP program
redirecting to an XSKMAP, traffic from the peer namespace only."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import random
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest

from pybpf.testing.netns import Side, VethPair, veth_pair
from pybpf import IndexOutOfRangeError, Map, MapType, NotSupportedError
from pybpf import XskMap
from pybpf.programs import XdpMode, xsk_redirect
from pybpf.xdp import BindFlags, FrameCounts, PcapWriter, RxBatch, Umem, XskSocket

ETH, IP, UDP = 14, 20, 8
HEADERS = ETH + IP + UDP
PORT = 4242
MODES = [pytest.param(XdpMode.SKB, id="skb"), pytest.param(XdpMode.DRV, id="drv")]


@pytest.fixture
def net() -> Iterator[VethPair]:
    with veth_pair() as pair:
        yield pair


@pytest.fixture
def net2() -> Iterator[VethPair]:
    with veth_pair(queues=2) as pair:
        yield pair


@contextlib.contextmanager
def redirecting(side: Side, mode: XdpMode = XdpMode.SKB, entries: int = 4) -> Iterator[XskMap]:
    """An XSKMAP and ``xsk_redirect`` attached to ``side``'s interface; all gone on exit."""
    with XskMap.create(entries) as xskmap, xsk_redirect(xskmap) as prog:
        link = side.run(prog.attach_xdp, side.ifname, mode)
        try:
            yield xskmap
        finally:
            link.close()


def xsk(side: Side, queue: int = 0, **kwargs: object) -> XskSocket:
    """An XskSocket made in ``side``'s namespace."""
    return side.run(XskSocket, side.ifname, queue, **kwargs)


def collect(sock: XskSocket, want: int, timeout: float = 2.0) -> list[bytes]:
    """Frames received (copied out, released) until ``want`` arrived or ``timeout`` passed."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and (left := deadline - time.monotonic()) > 0:
        with sock.recv(64, timeout=left) as batch:
            out += [bytes(frame) for frame in batch]
    return out


def drain_udp(sock: socket.socket, want: int, timeout: float = 2.0) -> list[bytes]:
    """Datagrams read from a plain socket until ``want`` arrived or ``timeout`` passed."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append(sock.recv(65536))
        except socket.timeout:
            break
    return out


def udp_payload(frame: bytes) -> bytes:
    assert frame[12:14] == b"\x08\x00" and frame[23] == socket.IPPROTO_UDP, frame[:40].hex()
    return frame[HEADERS:]


def ether(dst: Side, src: Side, payload: bytes, ethertype: int = 0x88B5) -> bytes:
    """An Ethernet frame of the local experimental ethertype."""
    mac = bytes.fromhex
    return mac(dst.mac.replace(":", "")) + mac(src.mac.replace(":", "")) + struct.pack("!H", ethertype) + payload


def settled(sock: XskSocket, timeout: float = 1.0) -> FrameCounts:
    """Frame counts once nothing is in flight inside the kernel (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        sock.reclaim()
        counts = sock.frame_counts()
        if counts.kernel == 0 and counts.completion == 0 and counts.tx == 0 or time.monotonic() > deadline:
            return counts
        time.sleep(0.001)


# ---- bad input: refused before any syscall ------------------------------------------------------

@pytest.mark.nokernel
def test_unknown_interface_is_named() -> None:
    with pytest.raises(ValueError, match="no-such-if0"):
        XskSocket("no-such-if0", 0)


@pytest.mark.nokernel
@pytest.mark.parametrize("field, value", [("rx_size", 1000), ("tx_size", 3), ("fill_size", 0), ("comp_size", 96)])
def test_ring_sizes_must_be_powers_of_two(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        XskSocket("lo", 0, **{field: value})


@pytest.mark.nokernel
def test_socket_needs_a_ring_and_sane_flags() -> None:
    with pytest.raises(ValueError, match="both 0"):
        XskSocket("lo", 0, rx_size=0, tx_size=0)
    with pytest.raises(ValueError, match="exclude"):
        XskSocket("lo", 0, bind_flags=BindFlags.COPY | BindFlags.ZEROCOPY)
    with pytest.raises(ValueError, match="queue_id"):
        XskSocket("lo", -1)


@pytest.mark.nokernel
def test_queue_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"queue_id 7 is out of range: 'lo' has 1 receive queue"):
        XskSocket("lo", 7)


@pytest.mark.nokernel
def test_ring_offsets_in_both_layouts() -> None:
    """Before Linux 5.4 ``XDP_MMAP_OFFSETS`` had no flags word per ring (96 bytes, not 128)."""
    from pybpf._sys.xdp import parse_mmap_offsets

    rings = [(0, 64, 128), (0, 64, 128), (0, 64, 128), (0, 64, 128)]
    old = parse_mmap_offsets(b"".join(struct.pack("=3Q", *ring) for ring in rings))
    assert (old.fr.producer, old.fr.consumer, old.fr.desc, old.fr.flags) == (0, 64, 128, 68)
    new = parse_mmap_offsets(b"".join(struct.pack("=4Q", *ring, 72) for ring in rings))
    assert (new.cr.consumer, new.cr.desc, new.cr.flags) == (64, 128, 72)
    with pytest.raises(OSError, match="40 bytes"):
        parse_mmap_offsets(bytes(40))


@pytest.mark.nokernel
@pytest.mark.parametrize("kwargs, match", [
    ({"frame_count": 0}, "frame_count"),
    ({"frame_count": 8, "frame_size": 3000}, "frame_size"),
    ({"frame_count": 8, "frame_size": 1024}, "frame_size"),
    ({"frame_count": 8, "headroom": 4000}, "headroom"),
])
def test_umem_shape_is_checked(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Umem(**kwargs)


# ---- receiving ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_frames_from_the_peer_arrive_intact(net: VethPair, mode: XdpMode, no_fd_leak: None) -> None:
    rng = random.Random(1)
    payloads = [rng.randbytes(size) for size in (1, 17, 64, 512, 1000, 1472)]
    with redirecting(net.local, mode) as xskmap, xsk(net.local) as sock, net.peer.socket() as sender:
        xskmap[0] = sock
        assert not sock.zerocopy
        for payload in payloads:
            sender.sendto(payload, (net.local.ip, PORT))
        frames = collect(sock, len(payloads))
        assert [udp_payload(f) for f in frames] == payloads
        assert all(f[:6] == bytes.fromhex(net.local.mac.replace(":", "")) for f in frames)
        assert sock.stats().rx_dropped == 0


def test_batch_views_are_zero_copy_and_revoked(net: VethPair) -> None:
    with redirecting(net.local) as xskmap, xsk(net.local) as sock, net.peer.socket() as sender:
        xskmap[0] = sock
        sender.sendto(b"zero-copy", (net.local.ip, PORT))
        batch = sock.recv(8, timeout=2)
        assert isinstance(batch, RxBatch) and len(batch) == 1
        view = batch[0]
        frame = sock.umem.frame(batch.addrs[0], batch.lengths[0])
        assert view.obj is frame.obj  # both look at the UMEM's mapping: nothing was copied
        assert bytes(view) == bytes(frame) and bytes(view[HEADERS:]) == b"zero-copy"
        assert sock.frame_counts().held == 1
        batch.release()
        with pytest.raises(ValueError):
            bytes(view)
        with pytest.raises(ValueError, match="released"):
            batch[0]
        assert sock.frame_counts().held == 0


def test_queue_without_socket_reaches_the_stack(net2: VethPair) -> None:
    """Flows spread over two queues; only queue 0 has a socket: the rest must reach the stack.

    Driver mode: in generic (SKB) mode veth reports every frame on queue 0.
    """
    count = 48
    with redirecting(net2.local, XdpMode.DRV) as xskmap, xsk(net2.local, 0) as sock, net2.local.socket() as stack:
        stack.bind((net2.local.ip, PORT))
        xskmap[0] = sock
        senders = [net2.peer.socket() for _ in range(count)]  # each socket hashes to its own tx queue
        try:
            for i, sender in enumerate(senders):
                sender.sendto(b"flow %03d" % i, (net2.local.ip, PORT))
        finally:
            for sender in senders:
                sender.close()
        deadline = time.monotonic() + 2
        redirected: list[bytes] = []
        passed: list[bytes] = []
        while len(redirected) + len(passed) < count and time.monotonic() < deadline:
            redirected += [udp_payload(f) for f in collect(sock, count, timeout=0.05)]
            passed += drain_udp(stack, count, timeout=0.05)
        assert redirected and passed, (len(redirected), len(passed))
        assert sorted(redirected + passed) == [b"flow %03d" % i for i in range(count)]


def test_no_frames_leak_over_many_rounds(net: VethPair, no_fd_leak: None) -> None:
    """48 receive frames recycled 40 times over: every frame is accounted for at the end."""
    umem = Umem(64, 2048)
    with umem, redirecting(net.local) as xskmap, net.peer.socket() as sender:
        sock = xsk(net.local, umem=umem, rx_size=64, tx_size=16, fill_size=64, comp_size=16)
        with sock:
            xskmap[0] = sock
            assert sock.frame_counts() == (16, 0, 48, 0, 0, 0, 0)  # a TX ring's worth kept free
            received = 0
            for round_ in range(60):
                for i in range(32):
                    sender.sendto(struct.pack("!II", round_, i), (net.local.ip, PORT))
                frames = collect(sock, 32)
                assert [udp_payload(f) for f in frames] == [struct.pack("!II", round_, i) for i in range(32)]
                received += len(frames)
            assert received == 60 * 32
            counts = settled(sock)
            assert counts == (16, 0, 48, 0, 0, 0, 0), counts
            assert counts.total == 64
            assert sock.stats().rx_dropped == 0


def test_recv_waits_and_times_out(net: VethPair) -> None:
    with redirecting(net.local) as xskmap, xsk(net.local) as sock:
        xskmap[0] = sock
        start = time.monotonic()
        assert not sock.wait(0.05)
        assert len(sock.recv(timeout=0.05)) == 0
        assert time.monotonic() - start < 1.0


def test_asyncio_wait_readable(net: VethPair) -> None:
    with redirecting(net.local) as xskmap, xsk(net.local) as sock, net.peer.socket() as sender:
        xskmap[0] = sock

        async def main() -> bytes:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, sender.sendto, b"async", (net.local.ip, PORT))
            await asyncio.wait_for(sock.wait_readable(), 2)
            with sock.recv() as batch:
                return bytes(batch[0][HEADERS:])

        assert asyncio.run(main()) == b"async"


# ---- sending ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_sent_frames_reach_the_peer(net: VethPair, mode: XdpMode, no_fd_leak: None) -> None:
    frames = [ether(net.peer, net.local, b"%04d" % i + bytes(range(60))) for i in range(300)]
    with redirecting(net.local, mode), xsk(net.local, tx_size=64, comp_size=64) as sock, \
            net.peer.packet_socket(0x88B5) as capture:
        capture.settimeout(2)
        sent: list[bytes] = []
        got: list[bytes] = []
        deadline = time.monotonic() + 2
        while len(sent) < len(frames) and time.monotonic() < deadline:
            sent += frames[len(sent): len(sent) + sock.send(frames[len(sent):])]
            while len(got) < len(sent):  # read as we go: the peer's socket buffer is small
                got.append(capture.recv(2048))
        assert got == sent == frames
        counts = settled(sock)
        assert counts.free + counts.fill == counts.total and counts.kernel == 0, counts


def test_one_send_empties_a_large_tx_ring(net: VethPair) -> None:
    """Each copy-mode kick sends a kernel batch (16 frames on 5.10, 32 later, the ring on 6.17+):
    one ``send`` must keep kicking until the whole ring is out, with no second call."""
    count = 1024
    frames = [ether(net.peer, net.local, b"%05d" % i + bytes(50)) for i in range(count)]
    with xsk(net.local, rx_size=0, tx_size=count, comp_size=count) as sock, \
            net.peer.packet_socket(0x88B5) as capture:
        capture.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: room for the whole burst
        assert sock.send(frames) == count
        capture.settimeout(2)
        got = [capture.recv(2048) for _ in range(count)]
        assert got == frames
        counts = settled(sock)
        assert counts.free == counts.total and counts.kernel == 0, counts


def test_send_checks_its_input(net: VethPair) -> None:
    with xsk(net.local, rx_size=0, tx_size=16) as sock:
        with pytest.raises(ValueError, match="does not fit"):
            sock.send([b"x" * 5000])
        with pytest.raises(ValueError, match="does not fit"):
            sock.send([b""])
        with pytest.raises(ValueError, match="no RX ring"):
            sock.recv()
        assert sock.frame_counts().free == sock.umem.frame_count  # TX-only: nothing in FILL


# ---- lifetime and the XSKMAP --------------------------------------------------------------------

def test_closing_the_socket_removes_it_from_redirection(net: VethPair) -> None:
    with redirecting(net.local) as xskmap, net.local.socket() as stack, net.peer.socket() as sender:
        stack.bind((net.local.ip, PORT))
        sock = xsk(net.local)
        xskmap[0] = sock
        sender.sendto(b"to xsk", (net.local.ip, PORT))
        assert [udp_payload(f) for f in collect(sock, 1)] == [b"to xsk"]
        sock.close()
        sender.sendto(b"to stack", (net.local.ip, PORT))
        assert drain_udp(stack, 1) == [b"to stack"]


def test_dropped_socket_is_closed_by_its_finalizer(net: VethPair, no_fd_leak: None) -> None:
    with redirecting(net.local) as xskmap, net.local.socket() as stack, net.peer.socket() as sender:
        stack.bind((net.local.ip, PORT))
        sock = xsk(net.local)
        xskmap[0] = sock
        del sock
        gc.collect()
        sender.sendto(b"after gc", (net.local.ip, PORT))
        assert drain_udp(stack, 1) == [b"after gc"]


def test_xskmap_rules(net: VethPair) -> None:
    with Map.create(type=MapType.XSKMAP, key_size=4, value_size=4, max_entries=4) as xskmap:
        assert isinstance(xskmap, XskMap)
        with xsk(net.local) as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            xskmap[1] = sock
            xskmap[2] = sock.fileno()
            with pytest.raises(NotSupportedError, match="only XDP programs"):
                xskmap[1]
            with pytest.raises(NotSupportedError):
                xskmap.lookup(0)
            with pytest.raises(OSError, match="AF_XDP socket") as err:
                xskmap[3] = udp
            assert err.value.errno == errno.EOPNOTSUPP
            with pytest.raises(IndexOutOfRangeError):
                xskmap[4] = sock
            with pytest.raises(IndexOutOfRangeError):
                del xskmap[9]
            assert list(xskmap.keys()) == [0, 1, 2, 3]
            del xskmap[1]
            del xskmap[2]


def test_zero_copy_on_veth_is_not_supported(net: VethPair) -> None:
    with redirecting(net.local, XdpMode.DRV):
        with pytest.raises(NotSupportedError, match="zero-copy"):
            xsk(net.local, bind_flags=BindFlags.ZEROCOPY)
        with xsk(net.local, bind_flags=BindFlags.COPY) as sock:
            assert not sock.zerocopy


def test_second_socket_on_a_busy_queue_is_refused(net: VethPair, no_fd_leak: None) -> None:
    with xsk(net.local):
        with pytest.raises(OSError, match="already has an AF_XDP socket") as err:
            xsk(net.local)
        assert err.value.errno == errno.EBUSY


def test_shared_umem_across_two_queues(net2: VethPair, no_fd_leak: None) -> None:
    count = 48
    with Umem(256, 2048) as umem, redirecting(net2.local, XdpMode.DRV) as xskmap:
        first = xsk(net2.local, 0, umem=umem, rx_size=64, tx_size=32, fill_size=64, comp_size=32)
        second = xsk(net2.local, 1, umem=umem, rx_size=64, tx_size=32, fill_size=64, comp_size=32)
        with first, second:
            assert second.bind_flags & BindFlags.SHARED_UMEM
            xskmap[0], xskmap[1] = first, second
            senders = [net2.peer.socket() for _ in range(count)]
            try:
                for i, sender in enumerate(senders):
                    sender.sendto(b"shared %03d" % i, (net2.local.ip, PORT))
            finally:
                for sender in senders:
                    sender.close()
            got: dict[XskSocket, list[bytes]] = {first: [], second: []}
            deadline = time.monotonic() + 2
            while sum(map(len, got.values())) < count and time.monotonic() < deadline:
                for sock in got:
                    got[sock] += [udp_payload(f) for f in collect(sock, count, timeout=0.02)]
            assert got[first] and got[second], "each queue's socket receives its flows"
            assert sorted(got[first] + got[second]) == [b"shared %03d" % i for i in range(count)]
            counts = umem.frame_counts()
            assert counts.fill == 128 and counts.free == 128, counts
            assert counts.total == 256 and counts.kernel == 0 and counts.held == 0, counts
            with pytest.raises(ValueError, match="inherits"):
                xsk(net2.local, 1, umem=umem, bind_flags=BindFlags.COPY)
        assert not umem.in_use and umem.frame_counts().free == 256


def test_shared_umem_on_one_queue_shares_its_rings(net: VethPair, no_fd_leak: None) -> None:
    """Two sockets on one queue share the FILL and COMPLETION rings, which outlive the first socket."""
    with Umem(128, 2048) as umem, redirecting(net.local) as xskmap, net.peer.socket() as sender:
        first = xsk(net.local, 0, umem=umem, rx_size=64, tx_size=16, fill_size=64, comp_size=16)
        second = xsk(net.local, 0, umem=umem, rx_size=64, tx_size=0)
        with second:
            assert second.bind_flags & BindFlags.SHARED_UMEM
            xskmap[0] = second  # the program now redirects queue 0's frames to the second socket
            first.close()
            for i in range(40):
                sender.sendto(b"second %02d" % i, (net.local.ip, PORT))
            assert [udp_payload(f) for f in collect(second, 40)] == [b"second %02d" % i for i in range(40)]
            counts = settled(second)
            assert counts.fill == 64 and counts.kernel == 0 and counts.total == 128, counts
        assert not umem.in_use and umem.frame_counts().free == 128


# ---- pcap ---------------------------------------------------------------------------------------

@pytest.mark.nokernel
@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
def test_tcpdump_reads_our_pcap(tmp_path: pytest.TempPathFactory) -> None:
    path = os.path.join(str(tmp_path), "capture.pcap")
    local = Side("-", "x", "10.199.0.1", "02:00:00:c7:00:01")
    peer = Side("-", "y", "10.199.0.2", "02:00:00:c7:00:02")
    frames = [_udp_frame(peer, local, 5000 + i, PORT, b"pcap %d" % i) for i in range(5)]
    with PcapWriter(path) as pcap:
        pcap.write_many(frames[:3], timestamp=1_700_000_000.5)
        for frame in frames[3:]:
            pcap.write(memoryview(frame))
    assert pcap.count == 5
    done = subprocess.run(["tcpdump", "-nn", "-r", path], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 5
    assert "10.199.0.2.5000 > 10.199.0.1.4242: UDP, length 6" in lines[0]
    assert lines[0].startswith(time.strftime("%H:%M:%S", time.localtime(1_700_000_000)) + ".500000")


def _udp_frame(src: Side, dst: Side, sport: int, dport: int, payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP, checksums filled in."""
    udp_len = UDP + len(payload)
    ip_header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, IP + udp_len, 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                            socket.inet_aton(src.ip), socket.inet_aton(dst.ip))
    ip_header = ip_header[:10] + struct.pack("!H", _checksum(ip_header)) + ip_header[12:]
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    return ether(dst, src, ip_header + udp, 0x0800)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
