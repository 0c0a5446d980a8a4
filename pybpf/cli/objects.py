"""Naming maps and programs as bpftool does (``id N``, ``pinned FILE``, ``name NAME``, ``tag TAG``).

These hand out raw fds (closed by the caller, ``closing``), not ``Map``/``Program`` objects: ``map
show`` and ``prog show`` need only the info struct and ``/proc/self/fdinfo``, and so import only
``pybpf._sys``. A pin is checked for the kind of object it holds before anything reads it as one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .._sys import commands
from .._sys.constants import Cmd, FileFlags
from .words import UsageError, Words

MAP_GRAMMAR = "MAP := { id MAP_ID | pinned FILE | name MAP_NAME }"
PROG_GRAMMAR = "PROG := { id PROG_ID | pinned FILE | tag PROG_TAG | name PROG_NAME }"


@contextmanager
def closing(fds: list[int]) -> Iterator[list[int]]:
    """Close every fd in ``fds`` (as it is when the block ends) afterwards."""
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def pinned_fd(path: str, kind: str, flags: int = 0) -> int:
    """Open the object pinned at ``path`` (no symlinks followed); UsageError if it is not a
    ``kind`` (a program's info read as a map's would print garbage)."""
    fd = commands.obj_get(path, flags, what=kind)
    found = commands.object_kind(fd)
    if found != kind:
        os.close(fd)
        raise UsageError(f"{path} is {'a ' + found if found else 'not a BPF object'}, not a {kind}")
    return fd


def _by_name(name: str, next_cmd: int, fd_cmd: int, what: str, flags: int, match: Callable[[int], bool]) -> list[int]:
    found: list[int] = []
    try:
        for fd in commands.each_fd(next_cmd, fd_cmd, what, flags):
            if match(fd):
                found.append(fd)
            else:
                os.close(fd)
    except BaseException:
        for fd in found:
            os.close(fd)
        raise
    if not found:
        raise UsageError(f"no {what} named '{name}'")
    return found


def map_fds(words: Words, readonly: bool = False) -> list[int]:
    """``MAP`` -> fds of the maps it names (``name`` may name several)."""
    flags = FileFlags.RDONLY if readonly else 0
    how = words.take("a map: 'id MAP_ID', 'pinned FILE' or 'name MAP_NAME'")
    if how == "id":
        return [commands.fd_by_id(Cmd.MAP_GET_FD_BY_ID, words.id("map id"), "open map", flags)]
    if how == "pinned":
        return [pinned_fd(words.take("a pin path"), "map", flags)]
    if how == "name":
        name = words.take("a map name")
        return _by_name(name, Cmd.MAP_GET_NEXT_ID, Cmd.MAP_GET_FD_BY_ID, "map", flags,
                        lambda fd: commands.map_info(fd).name.decode(errors="replace") == name)
    raise UsageError(f"expected 'id', 'pinned' or 'name', got '{how}'")


def map_fd(words: Words, readonly: bool = False) -> int:
    """``MAP`` -> the fd of the one map it names."""
    fds = map_fds(words, readonly)
    if len(fds) > 1:
        ids = [commands.map_info(fd).id for fd in fds]
        for fd in fds:
            os.close(fd)
        raise UsageError(f"{len(ids)} maps have that name: use 'id MAP_ID' (ids {', '.join(map(str, ids))})")
    return fds[0]


def prog_fds(words: Words) -> list[int]:
    """``PROG`` -> fds of the programs it names (``tag`` and ``name`` may name several)."""
    how = words.take("a program: 'id PROG_ID', 'pinned FILE', 'tag PROG_TAG' or 'name PROG_NAME'")
    if how == "id":
        return [commands.fd_by_id(Cmd.PROG_GET_FD_BY_ID, words.id("program id"), "open program")]
    if how == "pinned":
        return [pinned_fd(words.take("a pin path"), "program")]
    if how in ("tag", "name"):
        text = words.take(f"a program {how}")
        if how == "tag":
            tag = _tag(text)
            match: Callable[[int], bool] = lambda fd: bytes(commands.prog_info(fd).tag) == tag  # noqa: E731
        else:
            match = lambda fd: commands.prog_info(fd).name.decode(errors="replace") == text  # noqa: E731
        return _by_name(text, Cmd.PROG_GET_NEXT_ID, Cmd.PROG_GET_FD_BY_ID, "program", 0, match)
    raise UsageError(f"expected 'id', 'pinned', 'tag' or 'name', got '{how}'")


def _tag(text: str) -> bytes:
    """A program tag: 8 bytes as 16 hex digits (bpftool also takes ``a1 b2 ...`` words)."""
    try:
        tag = bytes.fromhex(text)
    except ValueError:
        tag = b""
    if len(tag) != 8:
        raise UsageError(f"program tag: '{text}' is not 8 bytes of hex")
    return tag
