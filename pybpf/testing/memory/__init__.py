"""An in-memory kernel for pybpf: maps with the kernel's semantics and errors, without privileges.

``memory_kernel()`` swaps pybpf's door to the kernel (``pybpf._sys.syscall``) for one in Python,
so code written against pybpf's public API runs unchanged in a test. One module per concept: the
door (``door``), objects, ids and lifetimes (``kernel``, ``objects``), fds (``fds``), the map types
(``hashmaps``, ``arrays``, ``lpm``, ``keyless``, ``sockets``, ``ringbuf``), batches (``batch``),
the virtual bpffs (``bpffs``), program stand-ins and BTF (``programs``).
"""

from . import arrays, hashmaps, keyless, lpm, ringbuf, sockets  # noqa: F401 - each registers its map types
from .kernel import MemoryKernel, memory_kernel
from .objects import NotInMemoryKernelError
from .programs import StandIn

__all__ = ["MemoryKernel", "NotInMemoryKernelError", "StandIn", "memory_kernel"]
