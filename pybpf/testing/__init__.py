"""Tools for testing code that uses pybpf: ``memory_kernel()`` (maps in memory, with the kernel's
semantics and errors, for tests without privileges; ``pybpf.testing.plugin`` is its pytest
plugin), ``netns`` (throwaway network namespaces joined by a veth pair, for tests, demos and
benchmarks that need traffic without touching the host's network), ``cgroups`` (a throwaway child
cgroup, and processes and sockets made inside it). No pytest needed to import."""

from .memory import MemoryKernel, NotInMemoryKernelError, memory_kernel

__all__ = ["MemoryKernel", "NotInMemoryKernelError", "memory_kernel"]
