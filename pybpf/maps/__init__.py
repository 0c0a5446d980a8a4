"""Maps: ``MapSpec`` (plain data), ``Map`` (owns an fd) and the typed subclasses."""

from .fdmaps import MapOfMaps, ProgramArray, ReuseportSockArray, SockHash, SockMap, socket_cookie
from .info import MapInfo, maps
from .keyless import BloomFilter, QueueMap
from .map import Map
from .spec import MapSpec
from .xsk import XskMap

__all__ = [
    "BloomFilter",
    "Map",
    "MapInfo",
    "MapOfMaps",
    "MapSpec",
    "ProgramArray",
    "QueueMap",
    "ReuseportSockArray",
    "SockHash",
    "SockMap",
    "XskMap",
    "maps",
    "socket_cookie",
]
