"""``RxBatch``: received frames as views into the UMEM, recycled to the FILL ring on release."""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import Any

from .rings import QueueRings
from .umem import Umem

_U32 = 0xFFFFFFFF


class RxBatch(Sequence[memoryview]):
    """Frames from one ``recv``: each item is a memoryview into the UMEM (no copy).

    The views stay valid until the batch is released (``release()``, leaving a ``with`` block, or
    dropping the batch); then the frames go back to the FILL ring and the views are released.
    """

    __slots__ = ("_descs", "_umem", "_rings", "_views", "__weakref__")

    def __init__(self, umem: Umem, rings: QueueRings | None, descs: array[int]) -> None:
        self._descs = descs  # address, length (| options << 32) per frame, as the RX ring had them
        self._umem: Umem | None = umem
        self._rings = rings
        self._views: list[memoryview] = []
        if descs:
            umem.lend(self, len(descs) >> 1)

    def __len__(self) -> int:
        return len(self._descs) >> 1

    def __getitem__(self, index: int | slice) -> Any:
        umem = self._umem
        if umem is None:
            raise ValueError("operation on a released RxBatch")
        count = len(self._descs) >> 1
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(count))]
        if not -count <= index < count:
            raise IndexError("RxBatch index out of range")
        addr = self._descs[2 * (index % count)]
        view = umem.buffer[addr: addr + (self._descs[2 * (index % count) + 1] & _U32)]
        self._views.append(view)
        return view

    def __iter__(self) -> Iterator[memoryview]:
        for index in range(len(self._descs) >> 1):
            yield self[index]

    @property
    def addrs(self) -> array[int]:
        """UMEM offsets of the frames' first bytes."""
        return self._descs[0::2]

    @property
    def lengths(self) -> list[int]:
        """Bytes in each frame."""
        return [value & _U32 for value in self._descs[1::2]]

    @property
    def nbytes(self) -> int:
        """Bytes in all frames together."""
        return sum(self.lengths)

    @property
    def released(self) -> bool:
        """Whether the frames went back to the kernel."""
        return self._umem is None

    def release(self) -> None:
        """Give the frames back (to the FILL ring) and release their views. Idempotent."""
        umem = self._umem
        if umem is None:
            return
        self._umem = None
        if self._views:
            for view in self._views:
                try:
                    view.release()
                except BufferError:
                    pass  # re-exported by the caller: the frame is recycled all the same
            self._views.clear()
        if not self._descs:
            return
        umem.give_back(self, self._descs[0::2], self._rings)

    def __enter__(self) -> RxBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else f"{self.nbytes} bytes"
        return f"<RxBatch {len(self)} frames {state}>"
