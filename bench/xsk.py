"""Packets/s into Python: AF_XDP (pybpf) vs AF_PACKET, against the XDP_DROP ceiling.

A veth pair joins two namespaces made for the run. In the peer namespace a generator process
replays one 64-byte UDP frame with ``BPF_PROG_TEST_RUN`` in live-frames mode (an XDP program
returning XDP_TX sends it out of the peer's veth), so the local veth receives it in driver-mode
XDP. Three contenders take turns, interleaved, ``--rounds`` times; the table shows medians:

* XDP_DROP: a program counting into a per-CPU array and dropping: the generator's ceiling;
* AF_XDP: ``xsk_redirect`` to an ``XskSocket``; Python takes batches with ``recv`` and releases
  them (no copy of frame data);
* AF_PACKET: the same program finds no socket and passes frames to the stack; Python reads them
  from a plain AF_PACKET socket with ``recv_into``.

The generator runs in its own process (pinned to CPU 0, the receiver to CPU 1, unless
``--no-pin``) so the GIL never stalls it. A rate is frames seen / generator time.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import multiprocessing
import os
import select
import socket
import statistics
import struct
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from pybpf import Map, MapType, ProgramType, TestRunFlags, XskMap
from pybpf.asm import DW, FP, R0, R1, R2, W, Assembler, Helper
from pybpf.programs import Program, ProgramSpec, XdpMode, xsk_redirect
from pybpf.testing.netns import Side, veth_pair
from pybpf.xdp import Umem, XskSocket

XDP_DROP, XDP_TX = 1, 3
FIRST_CHUNK = 200_000  # frames in a contender's first BPF_PROG_TEST_RUN call
CALL = 0.3  # seconds one call should last after that: each call also costs ~20 ms of set-up and
            # tear-down while no frame flows, a pause that would flatter the slower contender
BATCH = 256
IDLE = 0.02  # after the generator stops, drain until this long without a frame
SPIN = 200  # empty polls before an idle receiver sleeps (busy-polling, as fast receivers do)
WAIT = 0.005  # longest sleep of an idle receiver (it wakes at once when a frame comes)
FRAMES = 4096


def udp_frame(dst: Side, src: Side, size: int = 64) -> bytes:
    """An Ethernet/IPv4/UDP frame of ``size`` bytes (without FCS) from ``src`` to ``dst``."""
    payload = bytes(size - 42)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src.ip), socket.inet_aton(dst.ip))
    words = struct.unpack("!10H", ip)
    total = sum(words)
    total = (total & 0xFFFF) + (total >> 16)
    ip = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:]
    udp = struct.pack("!HHHH", 40000, 4242, 8 + len(payload), 0)
    mac = bytes.fromhex
    return mac(dst.mac.replace(":", "")) + mac(src.mac.replace(":", "")) + b"\x08\x00" + ip + udp + payload


def counting_drop(counter: Map) -> Program:
    """XDP: add one to ``counter[0]`` (a per-CPU u64) and drop."""
    a = Assembler().st(W, FP, -4, 0).mov64(R2, FP).add64(R2, -4).ld_map_fd(R1, counter)
    a.call(Helper.map_lookup_elem).jeq(R0, 0, "out").mov64(R1, 1).atomic_add(DW, R0, R1, 0)
    a.label("out").mov64(R0, XDP_DROP).exit()
    return Program.load(ProgramSpec(ProgramType.XDP, a, name="count_drop"))


# ---- the generator process ------------------------------------------------------------------------

def generator(conn: Connection, done: mmap.mmap, peer: Side, frame: bytes, pin: bool, realtime: bool) -> None:
    """Child: on each ``(seconds, packets, chunk)`` request, replay ``frame`` out of the peer's veth
    ``chunk`` frames per call and answer ``(sent, elapsed)``; set ``done[0]`` when a run ends.
    ``None`` ends the process."""
    if pin:
        os.sched_setaffinity(0, {0})
    if realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    tx = Program.load(ProgramSpec(ProgramType.XDP, Assembler().mov64(R0, XDP_TX).exit(), name="xdp_tx"))
    with peer.inside():
        ctx = struct.pack("<6I", 0, len(frame), 0, socket.if_nametoindex(peer.ifname), 0, 0)  # xdp_md
        while (request := conn.recv()) is not None:
            seconds, packets, chunk = request
            sent, start = 0, time.perf_counter()
            while (packets and sent < packets) or (not packets and time.perf_counter() - start < seconds):
                repeat = min(chunk, packets - sent) if packets else chunk
                tx.test_run(frame, repeat, ctx, flags=TestRunFlags.XDP_LIVE_FRAMES)
                sent += repeat
            elapsed = time.perf_counter() - start
            done[0] = 1
            conn.send((sent, elapsed))
    tx.close()


class Generator:
    """The generator process and the shared flag it raises when a run ends."""

    def __init__(self, peer: Side, frame: bytes, pin: bool, realtime: bool) -> None:
        self.done = mmap.mmap(-1, mmap.PAGESIZE)
        self.conn, child = multiprocessing.get_context("fork").Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=generator, args=(child, self.done, peer, frame, pin, realtime), daemon=True)
        self.process.start()
        child.close()

    def run(self, receive: Callable[[mmap.mmap], int], seconds: float, packets: int,
            chunk: int = FIRST_CHUNK) -> tuple[int, int, float]:
        """Generate while ``receive(done)`` counts; ``(received, sent, elapsed)``."""
        self.done[0] = 0
        self.conn.send((seconds, packets, chunk))
        received = receive(self.done)
        sent, elapsed = self.conn.recv()
        return received, sent, elapsed

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(10)
        self.conn.close()


# ---- receivers ------------------------------------------------------------------------------------

def receive_xsk(sock: XskSocket) -> Callable[[mmap.mmap], int]:
    """Count frames through AF_XDP: batches taken and released, nothing copied."""
    def receive(done: mmap.mmap) -> int:
        recv, wait, count, empty = sock.recv, sock.wait, 0, 0
        last = time.perf_counter()
        while not done[0] or time.perf_counter() - last < IDLE:
            batch = recv(BATCH)
            if batch:
                count += len(batch)
                batch.release()
                last, empty = time.perf_counter(), 0
            else:
                empty += 1
                if empty > SPIN:
                    wait(WAIT)
        return count
    return receive


def receive_packet(sock: socket.socket) -> Callable[[mmap.mmap], int]:
    """Count frames through AF_PACKET: one ``recv_into`` per frame."""
    buf = bytearray(2048)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)

    def receive(done: mmap.mmap) -> int:
        recv_into, poll, count, empty, flags = sock.recv_into, poller.poll, 0, 0, socket.MSG_DONTWAIT
        last = time.perf_counter()
        while not done[0] or time.perf_counter() - last < IDLE:
            try:
                recv_into(buf, 2048, flags)
                count += 1
                last, empty = time.perf_counter(), 0
            except BlockingIOError:
                empty += 1
                if empty > SPIN:
                    poll(WAIT * 1000)
        return count
    return receive


def drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(2048, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return


# ---- the run --------------------------------------------------------------------------------------

XSK, DROP, PACKET = "AF_XDP (pybpf)", "XDP_DROP (ceiling)", "AF_PACKET"


class Round:
    """One contender's measurement: frames received and sent in ``elapsed`` seconds, and for
    AF_XDP the frames the kernel dropped because the FILL ring was empty or the RX ring full."""

    def __init__(self, received: int, sent: int, elapsed: float, fill_empty: int = 0, rx_full: int = 0) -> None:
        self.received, self.sent, self.elapsed = received, sent, elapsed
        self.fill_empty, self.rx_full = fill_empty, rx_full

    @property
    def rate(self) -> float:
        return self.received / self.elapsed

    @property
    def offered(self) -> float:
        """The generator's rate: what the receiver would get if it never fell behind."""
        return self.sent / self.elapsed


def run(rounds: int, seconds: float, packets: int, pin: bool, frames: int, ring: int,
        realtime: bool) -> dict[str, list[Round]]:
    results: dict[str, list[Round]] = {DROP: [], XSK: [], PACKET: []}
    with veth_pair() as net:
        local = net.local
        gen = Generator(net.peer, udp_frame(local, net.peer), pin, realtime)
        counter = Map.create(type=MapType.PERCPU_ARRAY, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=1)
        xskmap = XskMap.create(1)
        drop, redirect = counting_drop(counter), xsk_redirect(xskmap)
        link = local.run(redirect.attach_xdp, local.ifname, XdpMode.DRV)
        umem = Umem(frames, 2048)
        sock = local.run(XskSocket, local.ifname, 0, umem, rx_size=ring, tx_size=0, fill_size=ring)
        packet = local.packet_socket()
        packet.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: slack like the UMEM's
        if pin:
            os.sched_setaffinity(0, {1})
        if realtime:  # other processes on the receiver's CPU no longer preempt it (RT throttling leaves them 5%)
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))

        def ceiling(done: mmap.mmap) -> int:
            before = sum(counter[0])
            while not done[0]:
                time.sleep(0.001)
            time.sleep(IDLE)
            return int(sum(counter[0]) - before)

        contenders = {DROP: (drop, ceiling), XSK: (redirect, receive_xsk(sock)), PACKET: (redirect, receive_packet(packet))}
        chunks = dict.fromkeys(contenders, FIRST_CHUNK)  # then sized from the contender's last rate
        try:
            for round_ in range(rounds):
                for name, (program, receive) in contenders.items():
                    link.update(program)
                    if name == XSK:
                        xskmap[0] = sock
                    else:
                        xskmap.delete(0)
                    drain(packet)
                    before = sock.stats()
                    received, sent, elapsed = gen.run(receive, seconds, packets, chunks[name])
                    chunks[name] = max(10_000, int(sent / elapsed * CALL))
                    after = sock.stats()
                    result = Round(received, sent, elapsed, after.rx_fill_ring_empty_descs - before.rx_fill_ring_empty_descs,
                                   after.rx_ring_full - before.rx_ring_full)
                    results[name].append(result)
                    drops = f", FILL ring empty {result.fill_empty}, RX ring full {result.rx_full}" if name == XSK else ""
                    print(f"  round {round_ + 1} {name:<20} {result.rate / 1e6:6.2f} Mpps ({received}/{sent} frames, "
                          f"generator {result.offered / 1e6:.2f} Mpps{drops})", flush=True)
        finally:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            gen.close()
            packet.close()
            sock.close()
            umem.close()
            link.close()
            for obj in (drop, redirect, xskmap, counter):
                obj.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="generator time per measurement (default 0.5)")
    parser.add_argument("--packets", type=int, default=0, help="frames per measurement instead of --seconds")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved repetitions (default 7)")
    parser.add_argument("--frames", type=int, default=FRAMES, help=f"UMEM frames of 2 KiB (default {FRAMES})")
    parser.add_argument("--ring", type=int, default=0, help="FILL and RX ring entries, a power of two (default: --frames)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin generator and receiver")
    parser.add_argument("--realtime", action="store_true",
                        help="run generator and receiver SCHED_FIFO: other load no longer preempts them, and gets "
                             "only the 5%% RT throttling leaves while a contender runs (root; a busy machine's escape)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.packets < 0 or args.rounds <= 0:
        parser.error("--seconds and --rounds must be positive, --packets not negative")
    ring = args.ring or args.frames
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.2f}), 64-byte "
          f"frames, veth in driver-mode XDP, {args.frames} UMEM frames, FILL/RX rings of {ring}, "
          f"{'SCHED_FIFO generator and receiver, ' if args.realtime else ''}"
          f"{args.rounds} rounds of {f'{args.packets} frames' if args.packets else f'{args.seconds:g} s'}")
    results = run(args.rounds, args.seconds, args.packets, args.pin, args.frames, ring, args.realtime)
    ceiling = statistics.median(r.rate for r in results[DROP])
    print(f"\n{'contender':<22}{'median Mpps':>12}{'min':>8}{'max':>8}{'of ceiling':>12}")
    for name, rounds in results.items():
        rates = [r.rate for r in rounds]
        median = statistics.median(rates)
        print(f"{name:<22}{median / 1e6:>12.2f}{min(rates) / 1e6:>8.2f}{max(rates) / 1e6:>8.2f}{median / ceiling:>11.2f}x")
    xsk, packet = statistics.median(r.rate for r in results[XSK]), statistics.median(r.rate for r in results[PACKET])
    paired = statistics.median(x.rate / d.rate for x, d in zip(results[XSK], results[DROP]))
    offered = statistics.median(x.offered / d.rate for x, d in zip(results[XSK], results[DROP]))
    lost = sum(r.fill_empty + r.rx_full for r in results[XSK]) / max(1, sum(r.sent for r in results[XSK]))
    print(f"\nAF_XDP / AF_PACKET = {xsk / packet:.2f}x (goal >= 2)")
    print(f"AF_XDP / XDP_DROP  = {xsk / ceiling:.2f}x (goal >= 0.8); round by round {paired:.2f}x")
    print(f"the kernel's side alone (generator rate while AF_XDP ran / XDP_DROP) = {offered:.2f}x; "
          f"AF_XDP lost {lost:.1%} of the frames sent to a FILL ring left empty or a full RX ring")
    print(f"(load average now {os.getloadavg()[0]:.2f}: other work on this machine shows as spread between min and "
          f"max and as frames lost while the receiver is descheduled; more --frames give it more slack)")


if __name__ == "__main__":
    main()
