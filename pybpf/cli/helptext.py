"""Help text: the top level, an object's verbs, and one verb (usage, docstring, grammar)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from .registry import OBJECTS, ObjectEntry

if TYPE_CHECKING:
    from .command import Verb


def plain(doc: str) -> str:
    """A docstring as help text: indentation dedented, RST markup (double backticks) removed."""
    lines = doc.expandtabs().strip().splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()]
    cut = min(indents, default=0)
    return "\n".join([lines[0].strip(), *(line[cut:].rstrip() for line in lines[1:])]).replace("``", "") if lines else ""


def top_help() -> str:
    """``pybpf --help``."""
    from .. import __version__

    width = max(map(len, OBJECTS))
    lines = [f"usage: pybpf [-j|--json] [-p|--pretty] OBJECT {{ VERB | help }} ...    (pybpf {__version__})", "",
             "bpftool's objects, verbs and grammar over pybpf, and pybpf's applications.", "", "objects:"]
    lines += [f"  {name:<{width}}  {entry.summary}" for name, entry in OBJECTS.items()]
    lines += ["", "pybpf OBJECT help (or --help) lists an object's verbs; pybpf OBJECT VERB --help shows one.",
              "-j/--json and -p/--pretty (indented JSON) may come anywhere; -V/--version prints the version."]
    return "\n".join(lines) + "\n"


def object_help(obj: str, entry: ObjectEntry, verbs: list[Verb]) -> str:
    """``pybpf OBJECT help``: its verbs' synopses and its grammar."""
    lines = [f"pybpf {obj}: {entry.summary}", "", "usage:"]
    lines += [f"  {v.synopsis()}" for v in verbs]
    grammar = sys.modules[entry.modules[0]].__dict__.get("GRAMMAR", "")
    if grammar:
        lines += ["", *("  " + line for line in plain(grammar).splitlines())]
    lines += ["", f"pybpf {obj} VERB --help shows one verb; -j/--json, -p/--pretty anywhere."]
    return "\n".join(lines) + "\n"


def verb_help(v: Verb) -> str:
    """``pybpf OBJECT VERB --help``: usage, docstring, and the grammar definitions the usage uses."""
    grammar = _definitions(sys.modules[v.run.__module__].__dict__.get("GRAMMAR", ""))
    needed = [name for name in grammar if name in _tokens(v.usage)]
    for name in needed:  # grows while it is walked: the definitions the used ones refer to
        needed += [other for other in grammar if other not in needed and other in _tokens(grammar[name].split(":=", 1)[1])]
    lines = [f"usage: {v.synopsis()}", "", v.doc]
    if needed:
        lines.append("")
        lines += ["  " + line for name in grammar if name in needed for line in grammar[name].splitlines()]
    return "\n".join(lines) + "\n"


def _tokens(text: str) -> set[str]:
    return {word.strip("[]{}|") for word in text.split()}


def _definitions(grammar: str) -> dict[str, str]:
    """``NAME := ...`` blocks of a grammar (a block runs on over lines without ``:=``), by name."""
    blocks: dict[str, str] = {}
    name = ""
    for line in grammar.strip().splitlines():
        if ":=" in line:
            name = line.split(":=", 1)[0].strip()
            blocks[name] = line
        elif name:
            blocks[name] += "\n" + line
    return blocks
