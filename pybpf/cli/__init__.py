"""The ``pybpf`` command: bpftool's objects, verbs and grammar (map, prog, btf) and pybpf's
applications (proxy, reuseport, xsk, demo).

``registry.OBJECTS`` lists the objects (one line each); a verb is one ``@verb`` function in its
object's module (``command.verb``). Only the named object's modules are imported.
"""

from .command import main

__all__ = ["main"]
