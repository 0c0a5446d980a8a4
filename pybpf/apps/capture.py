"""Capture packets through AF_XDP into a pcap file: an XDP program sends one queue's frames to an
``XskSocket``, Python writes them out. The interface's stack sees nothing of that queue meanwhile,
so capture on an interface you own (a test veth, a mirror port)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..map import XskMap
from ..programs import XdpMode, xsk_redirect
from ..xdp import PcapWriter, XskSocket

_MODES = {"auto": XdpMode.AUTO, "skb": XdpMode.SKB, "drv": XdpMode.DRV}


@dataclass
class CaptureResult:
    """What a capture saw: packets and bytes written, and whether it stopped on its time limit."""

    packets: int
    bytes: int
    seconds: float
    timed_out: bool


def capture(ifname: str, queue: int, count: int, path: str, *, mode: str = "auto", timeout: float = 60.0,
            progress: Callable[[int], None] | None = None) -> CaptureResult:
    """Write the next ``count`` frames of ``ifname``'s ``queue`` to the pcap file at ``path``,
    giving up after ``timeout`` seconds; the XDP program is detached and everything closed after."""
    if count <= 0:
        raise ValueError(f"count must be positive, not {count}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}, not {mode!r}")
    packets = size = 0
    start = time.monotonic()
    deadline = start + timeout
    with XskSocket(ifname, queue) as xsk, XskMap.create(queue + 1, name="capture_xsks") as xsks, \
            xsk_redirect(xsks) as prog, PcapWriter(path) as pcap:
        xsks[queue] = xsk
        with prog.attach_xdp(ifname, _MODES[mode]):
            while packets < count and (left := deadline - time.monotonic()) > 0:
                with xsk.recv(min(64, count - packets), timeout=min(left, 0.5)) as batch:
                    stamp = time.time()
                    for frame in batch:
                        pcap.write(frame, stamp)
                        size += len(frame)
                    packets += len(batch)
                if progress is not None and len(batch):
                    progress(packets)
    return CaptureResult(packets, size, time.monotonic() - start, packets < count)
