"""The command's objects: one line each. Only the modules of the object named are imported.

A verb of an object is a ``@verb`` function (``command.verb``) in one of its modules; to add a
verb, write the function there (or in a new module appended to the object's ``modules``)::

    @verb("map", "event_pipe", usage="MAP [cpu N index M]")
    def event_pipe(ctx: Context, words: Words) -> None:
        # a docstring here is the verb's help: what it does, in a line or two
        fd = map_fd(words)          # MAP as bpftool names it (objects.py), kind checked
        cpu = words.integer("cpu") if words.accept("cpu") else None
        words.end()                 # trailing words are refused
        ...                         # print with ctx.write(...), or ctx.emit(...) under ctx.json

A new object is one line below plus its module; import heavy modules inside the verb functions,
not at the top of the module (``pybpf map show`` must stay a cold start of a few ms).
"""

from __future__ import annotations


class ObjectEntry:
    """``pybpf NAME ...``: the modules holding its verbs and the one-line summary for ``--help``.

    ``argparse``: the module registers itself with ``add_parser(subparsers)`` and parses its own
    options. ``error_status``: the exit status of a failure (bpftool's 255 for bpftool's objects,
    1 for pybpf's applications).
    """

    __slots__ = ("modules", "summary", "argparse", "error_status")

    def __init__(self, modules: tuple[str, ...], summary: str, *, argparse: bool = False, error_status: int = 255) -> None:
        self.modules, self.summary, self.argparse, self.error_status = modules, summary, argparse, error_status


OBJECTS: dict[str, ObjectEntry] = {
    "map": ObjectEntry(("pybpf.cli.maps", "pybpf.cli.events"), "show, dump and change maps (bpftool's verbs)"),
    "prog": ObjectEntry(("pybpf.cli.progs",), "show loaded programs"),
    "btf": ObjectEntry(("pybpf.cli.btf",), "dump BTF types (bpftool's 'btf dump')", argparse=True),
    "proxy": ObjectEntry(("pybpf.cli.proxy",), "relay TCP connections through a SOCKHASH: the kernel moves the bytes",
                         argparse=True, error_status=1),
    "reuseport": ObjectEntry(("pybpf.cli.reuseport",), "zero-downtime restart over a SO_REUSEPORT group", argparse=True,
                             error_status=1),
    "xsk": ObjectEntry(("pybpf.cli.xsk",), "AF_XDP sockets: capture a queue into a pcap file", error_status=1),
    "demo": ObjectEntry(("pybpf.cli.demo",), "show each socket map doing its job on this kernel", error_status=1),
    "cgroup": ObjectEntry(("pybpf.cli.cgroup",), "programs attached to cgroups (bpftool's 'cgroup show|tree')"),
    "net": ObjectEntry(("pybpf.cli.net",), "XDP, tc and flow dissector programs of this network namespace"),
    "link": ObjectEntry(("pybpf.cli.link",), "show, pin and detach links"),
    "accelerate": ObjectEntry(("pybpf.cli.accelerate",), "local TCP connections of a cgroup go socket to socket",
                              argparse=True, error_status=1),
    "dispatch": ObjectEntry(("pybpf.cli.dispatch",), "sk_lookup: any addresses and ports to one socket, by label",
                            argparse=True, error_status=1),
    "perf": ObjectEntry(("pybpf.cli.perf",), "programs attached through perf events (bpftool's 'perf list')"),
    "execsnoop": ObjectEntry(("pybpf.cli.execsnoop",), "trace new processes (execve), as bcc's execsnoop", error_status=1),
}
