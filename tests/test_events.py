"""RingBuffer, PerfBuffer and UserRingBuffer on the real kernel: records produced by programs run
with BPF_PROG_TEST_RUN, read through mmap and epoll."""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pybpf
from pybpf import Map, MapFullError, MapType, PerfBuffer, RingBuffer, UserRingBuffer
from pybpf.events import ReaderBusyError
import probes
from eventprogs import bpf_object, perf_output, perf_record, ringbuf_copy, ringbuf_output
from scale import SIZE, TIME

PAGE = os.sysconf("SC_PAGE_SIZE")


def payload(i: int, size: int) -> bytes:
    """A recognisable record: ``i`` in the first 4 bytes, then a pattern."""
    return i.to_bytes(4, "little") + bytes((i + k) & 0xFF for k in range(size - 4))


@pytest.fixture
def ring() -> Iterator[Map]:
    with Map.create(type=MapType.RINGBUF, max_entries=16 * PAGE, name="test_ring") as m:
        yield m


@pytest.fixture
def events() -> Iterator[Map]:
    with Map.create(type=MapType.PERF_EVENT_ARRAY, key_size=4, value_size=4, max_entries=pybpf.possible_cpus(), name="test_perf") as m:
        yield m


# ---- RingBuffer ---------------------------------------------------------------------------------


def test_ringbuffer_reads_records_in_order(ring: Map, no_fd_leak: None) -> None:
    with ringbuf_copy(ring, 32) as prog, RingBuffer(ring) as reader:
        assert reader.poll(0) == []
        sent = [payload(i, 32) for i in range(50)]
        for data in sent:
            prog.test_run(data)
        assert reader.poll(0) == sent
        assert reader.pending() == 0


def test_ringbuffer_skips_discarded_records(ring: Map) -> None:
    with ringbuf_copy(ring, 16) as keep, ringbuf_copy(ring, 16, discard=True) as drop, RingBuffer(ring) as reader:
        keep.test_run(payload(1, 16))
        drop.test_run(payload(2, 16))
        keep.test_run(payload(3, 16))
        assert reader.poll(0) == [payload(1, 16), payload(3, 16)]


def test_ringbuffer_records_across_the_end_of_the_ring(no_fd_leak: None) -> None:
    """Records wrap around the data area's end: the double mapping keeps each one contiguous."""
    with Map.create(type=MapType.RINGBUF, max_entries=PAGE) as small, ringbuf_copy(small, 1000) as prog, RingBuffer(small) as reader:
        got = []
        for i in range(20):
            prog.test_run(payload(i, 1000))
            if i % 3 == 2:
                got += reader.poll(0)
        got += reader.poll(0)
        assert got == [payload(i, 1000) for i in range(20)]


def test_ringbuffer_output_sizes_are_exact(ring: Map) -> None:
    with RingBuffer(ring) as reader:
        for size in (16, 17, 23, 100, 256):
            with ringbuf_output(ring, size) as prog:
                prog.test_run(payload(size, max(size, 16)))
        assert [len(r) for r in reader.poll(0)] == [16, 17, 23, 100, 256]


def test_consume_hands_out_views_valid_during_the_call(ring: Map) -> None:
    kept: list[memoryview] = []
    seen: list[bytes] = []

    def callback(view: memoryview) -> None:
        assert isinstance(view, memoryview) and view.readonly
        seen.append(bytes(view))
        kept.append(view)

    with ringbuf_copy(ring, 24) as prog, RingBuffer(ring) as reader:
        for i in range(5):
            prog.test_run(payload(i, 24))
        assert reader.consume(callback) == 5
        assert seen == [payload(i, 24) for i in range(5)]
        with pytest.raises(ValueError, match="released"):
            bytes(kept[0])
        assert reader.consume(callback) == 0


def test_consume_stops_at_a_raising_callback_and_keeps_its_place(ring: Map) -> None:
    with ringbuf_copy(ring, 16) as prog, RingBuffer(ring) as reader:
        for i in range(4):
            prog.test_run(payload(i, 16))
        seen: list[int] = []

        def callback(view: memoryview) -> None:
            seen.append(view[0])
            if view[0] == 1:
                raise KeyError("stop")

        with pytest.raises(KeyError):
            reader.consume(callback)
        assert seen == [0, 1]
        assert [r[0] for r in reader.poll(0)] == [2, 3]


class Record(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("pattern", ctypes.c_uint8 * 12)]


def test_records_decode_into_a_ctypes_type(ring: Map) -> None:
    with ringbuf_copy(ring, 16) as prog, RingBuffer(ring, type=Record) as reader:
        prog.test_run(payload(7, 16))
        (record,) = reader.poll(0)
        assert isinstance(record, Record) and record.index == 7 and list(record.pattern)[:3] == [7, 8, 9]
        prog.test_run(payload(8, 16))
        got: list[int] = []
        assert reader.consume(lambda r: got.append(r.index)) == 1
        assert got == [8]
    with ringbuf_output(ring, 16) as short, RingBuffer(ring, type=ctypes.c_uint64 * 4) as reader:
        short.test_run(payload(1, 16))
        with pytest.raises(ValueError, match="shorter than"):
            reader.poll(0)


def test_poll_waits_for_the_first_record_and_times_out(ring: Map) -> None:
    with ringbuf_copy(ring, 16) as prog, RingBuffer(ring) as reader:
        start = time.monotonic()
        assert reader.poll(0.05) == []
        assert time.monotonic() - start >= 0.04
        timer = threading.Timer(0.05, prog.test_run, (payload(9, 16),))
        timer.start()
        try:
            assert reader.poll(5 * TIME) == [payload(9, 16)]
        finally:
            timer.join()


def test_one_reader_for_several_rings(no_fd_leak: None) -> None:
    with Map.create(type=MapType.RINGBUF, max_entries=PAGE) as a, Map.create(type=MapType.RINGBUF, max_entries=2 * PAGE) as b:
        with ringbuf_copy(a, 16) as pa, ringbuf_copy(b, 16) as pb, RingBuffer(a) as reader:
            reader.add(b)
            pa.test_run(payload(1, 16))
            pb.test_run(payload(2, 16))
            pa.test_run(payload(3, 16))
            assert sorted(r[0] for r in reader.poll(0)) == [1, 2, 3]
            pb.test_run(payload(4, 16))
            assert reader.poll(1) == [payload(4, 16)]


def test_a_pinned_ring_keeps_unread_records_for_the_next_reader(ring: Map, pin_dir: Path) -> None:
    ring.pin(pin_dir / "ring")
    with ringbuf_copy(ring, 16) as prog:
        for i in range(4):
            prog.test_run(payload(i, 16))
        with Map.from_pin(pin_dir / "ring") as pinned, RingBuffer(pinned) as first:
            assert first.consume(lambda v: None) == 4
            prog.test_run(payload(4, 16))
        with Map.from_pin(pin_dir / "ring") as pinned, RingBuffer(pinned) as second:
            assert second.poll(0) == [payload(4, 16)]


def test_iteration_blocks_for_the_next_record(ring: Map) -> None:
    with ringbuf_copy(ring, 16) as prog, RingBuffer(ring) as reader:
        timer = threading.Timer(0.02, lambda: [prog.test_run(payload(i, 16)) for i in range(3)])
        timer.start()
        got = []
        for record in reader:
            got.append(record[0])
            if len(got) == 3:
                break
        timer.join()
        assert got == [0, 1, 2]


def test_async_for_waits_in_the_event_loop(ring: Map) -> None:
    async def main(reader: RingBuffer, prog: pybpf.Program) -> list[int]:
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, prog.test_run, payload(5, 16))
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        ticker = asyncio.create_task(tick())
        got = []
        async for record in reader:
            got.append(record[0])
            break
        ticker.cancel()
        assert ticks > 0, "the loop was blocked while waiting"
        return got

    with ringbuf_copy(ring, 16) as prog, RingBuffer(ring) as reader:
        assert asyncio.run(asyncio.wait_for(main(reader, prog), 10 * TIME)) == [5]


def test_fileno_works_with_selectors(ring: Map) -> None:
    import selectors

    with ringbuf_copy(ring, 16) as prog, RingBuffer(ring) as reader, selectors.DefaultSelector() as sel:
        sel.register(reader.fileno(), selectors.EVENT_READ)
        assert sel.select(0) == []
        prog.test_run(payload(1, 16))
        assert len(sel.select(1)) == 1
        assert reader.poll(0) == [payload(1, 16)]


def test_a_second_thread_gets_a_clear_error(ring: Map) -> None:
    with RingBuffer(ring) as reader:
        blocked = threading.Thread(target=reader.poll, args=(0.5 * TIME,))
        blocked.start()
        try:
            time.sleep(0.05)
            with pytest.raises(ReaderBusyError, match="another thread"):
                reader.poll(0)
            with pytest.raises(ReaderBusyError, match="another thread"):
                reader.consume(lambda v: None)
        finally:
            blocked.join()
        assert reader.poll(0) == []  # usable again once the other thread is done


@pytest.mark.parametrize("kind", ["ring", "perf"])
def test_close_wakes_a_thread_blocked_in_the_reader(ring: Map, events: Map, kind: str, no_fd_leak: None) -> None:
    reader: RingBuffer | PerfBuffer = RingBuffer(ring) if kind == "ring" else PerfBuffer(events)
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.extend(reader))  # iterates until closed
    worker.start()
    time.sleep(0.05)
    start = time.monotonic()
    reader.close()
    worker.join(5 * TIME)
    assert not worker.is_alive() and got == [] and time.monotonic() - start < 5 * TIME
    assert reader.closed


def test_close_from_inside_a_callback_is_refused(ring: Map) -> None:
    with ringbuf_copy(ring, 16) as prog, RingBuffer(ring) as reader:
        prog.test_run(payload(1, 16))
        with pytest.raises(RuntimeError, match="from inside its own callback"):
            reader.consume(lambda v: reader.close())
        assert not reader.closed


def test_a_forked_child_does_not_consume_its_parents_records(ring: Map) -> None:
    with ringbuf_copy(ring, 16) as prog, RingBuffer(ring) as reader:
        prog.test_run(payload(1, 16))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                reader.poll(0)
                code = 1
            except RuntimeError as err:
                code = 0 if "forked child" in str(err) else 2
            except BaseException:
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert reader.poll(0) == [payload(1, 16)]


def test_ringbuffer_bad_input(ring: Map) -> None:
    with Map.create(type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1, name="not_a_ring") as array:
        with pytest.raises(TypeError, match="RingBuffer reads RINGBUF maps; map 'not_a_ring' is ARRAY"):
            RingBuffer(array)
    closed = Map.create(type=MapType.RINGBUF, max_entries=PAGE, name="gone")
    closed.close()
    with pytest.raises(ValueError, match="'gone' is closed"):
        RingBuffer(closed)
    with pytest.raises(TypeError, match="Map or a map fd"):
        RingBuffer("ring")
    null = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(ValueError, match="not an open BPF map"):
            RingBuffer(null)
    finally:
        os.close(null)
    with pytest.raises(TypeError, match="ctypes type"):
        RingBuffer(ring, type=int)
    with pytest.raises(ValueError, match="power of 2"):
        Map.create(type=MapType.RINGBUF, max_entries=3 * PAGE)
    reader = RingBuffer(ring)
    with pytest.raises(TypeError, match="callable"):
        reader.consume(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        reader.poll(-1)
    reader.close()
    reader.close()
    with pytest.raises(ValueError, match="closed RingBuffer"):
        reader.poll(0)
    with pytest.raises(ValueError, match="closed RingBuffer"):
        reader.fileno()


def test_ringbuffer_outlives_the_map_object(no_fd_leak: None) -> None:
    m = Map.create(type=MapType.RINGBUF, max_entries=PAGE)
    prog = ringbuf_copy(m, 16)
    reader = RingBuffer(m)
    m.close()
    prog.test_run(payload(3, 16))
    assert reader.poll(0) == [payload(3, 16)]
    reader.close()
    prog.close()


@pytest.mark.slow
def test_ringbuffer_keeps_up_with_a_fast_producer(ring: Map) -> None:
    """A producer thread runs the program in batches while the reader drains: nothing is lost
    (each record is accounted for: read, or refused by the kernel when the ring was full)."""
    total = int(200_000 * SIZE)
    counted = [0]
    with ringbuf_copy(ring, 64) as prog, RingBuffer(ring) as reader:
        def produce() -> None:
            for _ in range(total // 1000):
                prog.test_run(bytes(64), repeat=1000)

        producer = threading.Thread(target=produce)
        producer.start()
        deadline = time.monotonic() + 60 * TIME
        while producer.is_alive() and time.monotonic() < deadline:
            counted[0] += reader.consume(lambda v: None, timeout=0.01)
        producer.join()
        counted[0] += reader.consume(lambda v: None)
    assert 0 < counted[0] <= total


# ---- PerfBuffer ---------------------------------------------------------------------------------


def test_perfbuffer_reads_samples(events: Map, no_fd_leak: None) -> None:
    with perf_output(events, 64) as prog, PerfBuffer(events) as reader:
        assert reader.cpus and set(reader.cpus) <= set(range(pybpf.possible_cpus()))
        assert reader.poll(0) == []
        sent = [payload(i, 64) for i in range(10)]
        for data in sent:
            prog.test_run(data)
        got = reader.poll(0)
        assert [len(r) for r in got] == [68] * 10  # raw size rounded: size + 4 is a multiple of 8
        assert [r[:64] for r in got] == [perf_record(data, 64) for data in sent]
        assert reader.lost == 0


def test_perfbuffer_records_that_wrap_around(events: Map) -> None:
    """80-byte records in a one-page ring: some straddle its end and are joined."""
    with perf_output(events, 64) as prog, PerfBuffer(events, pages=1) as reader:
        got: list[bytes] = []
        for i in range(200):
            prog.test_run(payload(i, 64))
            if i % 7 == 6:
                got += [r[:64] for r in reader.poll(0)]
        got += [r[:64] for r in reader.poll(0)]
        assert got == [perf_record(payload(i, 64), 64) for i in range(200)]
        seen: list[bytes] = []
        for i in range(60):
            prog.test_run(payload(i, 64))
            if i % 11 == 10:
                reader.consume(lambda v: seen.append(bytes(v[:64])))
        reader.consume(lambda v: seen.append(bytes(v[:64])))
        assert seen == [perf_record(payload(i, 64), 64) for i in range(60)]


def test_perfbuffer_counts_lost_records(events: Map) -> None:
    with perf_output(events, 64) as prog, PerfBuffer(events, pages=1) as reader:
        prog.test_run(bytes(64), repeat=200)
        first = reader.poll(0)
        assert 0 < len(first) < 200
        prog.test_run(bytes(64))  # the kernel reports the loss before the next record
        second = reader.poll(0)
        assert reader.lost == 200 - len(first)
        assert len(second) == 1


def test_perfbuffer_wakeup_batching(events: Map) -> None:
    with perf_output(events, 64) as prog, PerfBuffer(events, wakeup_events=8) as reader:
        import select

        poller = select.epoll()
        poller.register(reader.fileno(), select.EPOLLIN)
        for _ in range(3):
            prog.test_run(bytes(64))
        assert poller.poll(0) == []  # below the threshold: no wake-up
        assert len(reader.poll(0)) == 3  # but poll reads the rings anyway
        prog.test_run(bytes(64), repeat=8)
        assert poller.poll(1)
        assert len(reader.poll(0)) == 8
        poller.close()
    with perf_output(events, 64) as prog, PerfBuffer(events, watermark=2048) as reader:
        prog.test_run(bytes(64))
        assert len(reader.poll(0)) == 1


def test_perfbuffer_decodes_and_iterates(events: Map) -> None:
    with perf_output(events, 16) as prog, PerfBuffer(events, type=Record) as reader:
        prog.test_run(payload(4, 16))
        (record,) = reader.poll(1)
        assert record.index == 4
        timer = threading.Timer(0.02, prog.test_run, (payload(6, 16),))
        timer.start()
        for record in reader:
            assert record.index == 6
            break
        timer.join()


def test_perfbuffer_bad_input(events: Map, ring: Map) -> None:
    with pytest.raises(TypeError, match="PerfBuffer reads PERF_EVENT_ARRAY maps"):
        PerfBuffer(ring)
    with pytest.raises(ValueError, match="pages must be a power of 2"):
        PerfBuffer(events, pages=3)
    with pytest.raises(ValueError, match="wakeup_events"):
        PerfBuffer(events, wakeup_events=0)
    with pytest.raises(ValueError, match="not both"):
        PerfBuffer(events, wakeup_events=4, watermark=100)
    with pytest.raises(ValueError, match="watermark"):
        PerfBuffer(events, pages=1, watermark=PAGE + 1)
    reader = PerfBuffer(events)
    reader.close()
    with pytest.raises(ValueError, match="closed PerfBuffer"):
        reader.poll(0)


def test_perfbuffer_close_takes_its_events_out_of_the_map(events: Map, no_fd_leak: None) -> None:
    with perf_output(events, 16) as prog:
        with PerfBuffer(events):
            pass
        prog.test_run(bytes(16))  # no event in the map any more: the output fails quietly
        with PerfBuffer(events) as reader:
            assert reader.poll(0) == []


# ---- UserRingBuffer -----------------------------------------------------------------------------


@pytest.fixture
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pybpf.Collection]:
    probes.skip_if(probes.map_type("USER_RINGBUF"))
    path = bpf_object(tmp_path_factory.mktemp("events"), "events.c")
    with pybpf.load(path) as loaded:
        yield loaded


def test_user_ringbuffer_feeds_a_program(echo: pybpf.Collection, no_fd_leak: None) -> None:
    with UserRingBuffer(echo.maps["requests"]) as writer, RingBuffer(echo.maps["replies"]) as replies:
        for value in (1, 41, 99):
            writer.submit(value.to_bytes(8, "little"))
        record = writer.reserve(8)
        record[:] = (7).to_bytes(8, "little")
        writer.commit()
        writer.reserve(8)[:] = (1000).to_bytes(8, "little")
        writer.discard()
        drained = echo.programs["drain"].test_run(bytes(16))
        assert drained.retval == 4
        assert [int.from_bytes(r, "little") for r in replies.poll(0)] == [2, 42, 100, 8]
        assert writer.free() == writer.size


def test_user_ringbuffer_full_and_misuse(echo: pybpf.Collection) -> None:
    with UserRingBuffer(echo.maps["requests"]) as writer:
        written = 0
        with pytest.raises(MapFullError, match="not drained"):
            while written < 10_000:
                writer.submit(bytes(1000))
                written += 1
        assert written == writer.size // 1008
        assert writer.wait_writable(1000, 0) is False
        echo.programs["drain"].test_run(bytes(16))
        assert writer.wait_writable(1000, 1) is True
        writer.reserve(8)
        with pytest.raises(ValueError, match="already open"):
            writer.reserve(8)
        writer.discard()
        with pytest.raises(ValueError, match="no reservation"):
            writer.commit()
        with pytest.raises(ValueError, match="size must be"):
            writer.reserve(0)
        with pytest.raises(ValueError, match="size must be"):
            writer.reserve(writer.size)
        with pytest.raises(TypeError, match="bytes-like"):
            writer.submit("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="USER_RINGBUF"):
        UserRingBuffer(echo.maps["replies"])


# ---- the ring protocol on plain memory (no kernel) ----------------------------------------------


class _MemoryRing:
    """A RINGBUF's two mappings laid out in a bytearray, as the kernel lays them out: the
    protocol's edge cases (busy, discarded, wrapped records) written by hand."""

    def __init__(self, size: int) -> None:
        from pybpf.events.ringbuf import PAGE as RING_PAGE

        self.size, self.mask = size, size - 1
        self.consumer_page = bytearray(RING_PAGE)
        self.producer = bytearray(RING_PAGE + 2 * size)  # the producer page, then the data twice
        self.cons_word = memoryview(self.consumer_page).cast("Q")
        self.prod_word = memoryview(self.producer)[:8].cast("Q")
        self.data = memoryview(self.producer)[RING_PAGE:]
        self.lens = self.data.cast("I")

    def put(self, payload: bytes, busy: bool = False, discard: bool = False) -> None:
        pos = self.prod_word[0]
        span = (len(payload) + 8 + 7) & ~7
        record = len(payload).to_bytes(4, "little") + bytes(4) + payload + bytes(span - 8 - len(payload))
        for i, byte in enumerate(record):  # both copies of the data area, as the double mapping shows it
            at = (pos + i) & self.mask
            self.data[at] = self.data[at + self.size] = byte
        flags = (1 << 31 if busy else 0) | (1 << 30 if discard else 0)
        self.lens[(pos & self.mask) >> 2] |= flags
        self.lens[((pos & self.mask) + self.size) >> 2] |= flags
        self.prod_word[0] = pos + span

    def commit(self, pos: int) -> None:
        for at in (pos & self.mask, (pos & self.mask) + self.size):
            self.lens[at >> 2] &= ~(1 << 31) & 0xFFFFFFFF


@pytest.mark.nokernel
def test_ring_protocol_busy_discard_and_wrap() -> None:
    reader = RingBuffer.__new__(RingBuffer)
    reader._decode = None
    mem = _MemoryRing(128)
    mem.put(b"a" * 10)
    mem.put(b"b" * 5, discard=True)
    busy_at = mem.prod_word[0]
    mem.put(b"c" * 3, busy=True)
    mem.put(b"d" * 4)
    got: list[bytes] = []
    assert reader._consume(mem, lambda v: got.append(bytes(v))) == 1  # stops at the busy record
    assert got == [b"a" * 10] and mem.cons_word[0] == busy_at
    mem.commit(busy_at)
    out: list[bytes] = []
    reader._copy(mem, out)  # the copying path (poll) sees the rest in order
    assert out == [b"c" * 3, b"d" * 4] and mem.cons_word[0] == mem.prod_word[0]
    mem.put(b"f" * 40)
    assert reader._consume(mem, lambda v: got.append(bytes(v))) == 1
    mem.put(b"e" * 20)  # starts before the end of the 128-byte area and wraps around it
    assert (mem.cons_word[0] & mem.mask) + 28 > 128
    assert reader._consume(mem, lambda v: got.append(bytes(v))) == 1 and got[-1] == b"e" * 20
