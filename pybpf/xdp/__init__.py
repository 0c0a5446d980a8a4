"""AF_XDP: ``Umem`` (the shared packet buffer), ``XskSocket`` (rings over ``mmap``, zero-copy
receive, batched send), ``XskMap`` (where XDP programs find the sockets) and a pcap writer."""

from ..map.xsk import XskMap
from .batch import RxBatch
from .pcap import PcapWriter
from .socket import BindFlags, XskSocket, XskStatistics
from .umem import FrameCounts, Umem

__all__ = ["BindFlags", "FrameCounts", "PcapWriter", "RxBatch", "Umem", "XskMap", "XskSocket", "XskStatistics"]
