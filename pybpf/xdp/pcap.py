"""``PcapWriter``: classic pcap files (LINKTYPE_ETHERNET) that tcpdump and Wireshark read."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable
from typing import BinaryIO

_MAGIC_USEC = 0xA1B2C3D4
_MAGIC_NSEC = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    """Write packets to ``path`` (or an open binary file) as a classic little-endian pcap.

    ``snaplen`` caps the bytes kept per packet (the original length is still recorded);
    ``nanoseconds`` selects the nanosecond-resolution variant of the format.
    """

    def __init__(self, path: str | os.PathLike[str] | BinaryIO, snaplen: int = 65535, *,
                 nanoseconds: bool = False) -> None:
        if isinstance(snaplen, bool) or not isinstance(snaplen, int) or not 0 < snaplen <= 0x3FFFFFFF:
            raise ValueError(f"snaplen must be a positive int, not {snaplen!r}")
        self.snaplen = snaplen
        self.nanoseconds = nanoseconds
        self.count = 0
        """Packets written so far."""
        if isinstance(path, (str, os.PathLike)):
            self._file: BinaryIO = open(path, "wb")
            self._owns_file = True
        else:
            self._file = path
            self._owns_file = False
        magic = _MAGIC_NSEC if nanoseconds else _MAGIC_USEC
        self._file.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))

    def write(self, packet: bytes | bytearray | memoryview, timestamp: float | int | None = None) -> None:
        """Append one Ethernet frame; ``timestamp`` in seconds (float) or nanoseconds (int), default now."""
        if timestamp is None:
            ns = time.time_ns()
        elif isinstance(timestamp, int):
            ns = timestamp
        else:
            ns = int(timestamp * 1_000_000_000)
        seconds, frac = divmod(ns, 1_000_000_000)
        if not self.nanoseconds:
            frac //= 1000
        data = memoryview(packet).cast("B")
        kept = data[: self.snaplen]
        self._file.write(_RECORD.pack(seconds & 0xFFFFFFFF, frac, len(kept), len(data)))
        self._file.write(kept)
        self.count += 1

    def write_many(self, packets: Iterable[bytes | bytearray | memoryview], timestamp: float | int | None = None) -> None:
        """Append several frames with one timestamp (default: now), e.g. a received batch."""
        stamp = time.time_ns() if timestamp is None else timestamp
        for packet in packets:
            self.write(packet, stamp)

    def flush(self) -> None:
        """Flush buffered records to the file."""
        self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it. Idempotent."""
        if self._file.closed:
            return
        self._file.flush()
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
