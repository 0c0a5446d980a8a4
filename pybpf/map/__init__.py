"""Maps: ``MapSpec`` (plain data), ``Map`` (owns an fd) and the typed subclasses.

(The package is ``pybpf.map`` because ``pybpf.maps()`` is the function listing the system's maps.)"""

from .._sys.cpus import possible_cpus
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
    "possible_cpus",
    "socket_cookie",
]
