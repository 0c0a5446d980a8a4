"""The BPF ring buffer's memory layout as user space sees it (``kernel/bpf/ringbuf.c``,
``include/uapi/linux/bpf.h``): RINGBUF and USER_RINGBUF maps share it, with the roles swapped.

The map's fd is mmap'ed in two parts. At offset 0 one page holds ``consumer_pos`` (u64); at
offset ``PAGE`` one page holds ``producer_pos`` (u64), followed by the data area of
``max_entries`` bytes mapped twice in a row, so a record that wraps around the end reads as one
contiguous range. For a RINGBUF the consumer page is writable by user space and the rest
read-only; for a USER_RINGBUF it is the other way round. Each record starts with an 8-byte header:
u32 length (with the busy and discard bits) and u32 page offset (kernel use), and occupies
``round_up(length + 8, 8)`` bytes.
"""

from __future__ import annotations

import mmap

PAGE = mmap.PAGESIZE
BUSY_BIT = 1 << 31
"""Set in a record's length while its producer has reserved but not yet committed it."""
DISCARD_BIT = 1 << 30
"""Set when the producer discarded the record: skip it, but still advance past it."""
HDR_SZ = 8
"""``BPF_RINGBUF_HDR_SZ``: the record header's size."""
LENGTH_MASK = ~(BUSY_BIT | DISCARD_BIT) & 0xFFFFFFFF
CONSUMER_OFFSET = 0
"""mmap offset of the consumer page."""
PRODUCER_OFFSET = PAGE
"""mmap offset of the producer page; the data area follows it."""


def record_span(length: int) -> int:
    """Bytes a record of ``length`` payload bytes occupies in the ring: header and padding included."""
    return (length + HDR_SZ + 7) & ~7
