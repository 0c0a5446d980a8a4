"""Hostile and careless input: a call never reaches an object it was not meant for, integers never
wrap into kernel structs, pins cannot be redirected, and bad arguments are refused by name."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from pathlib import Path

import pytest

import pybpf
from pybpf import Link, Map, MapSpec, MapType, ProgramSpec, ProgramType, UnsafePathError, make_pin_dir
from pybpf.asm import R0, Assembler
from pybpf.errors import BPFError
from pybpf.programs import Program


def _prog() -> Program:
    return Program.load(ProgramSpec(ProgramType.SOCKET_FILTER, Assembler().mov64(R0, 0).exit(), name="hard"))


# ---- a closed object fails; it never touches the object that got its fd number -----------------


@pytest.mark.parametrize("kind", [MapType.HASH, MapType.LPM_TRIE])
@pytest.mark.parametrize("delete", [False, True])
def test_suspended_iteration_never_reads_the_next_map(no_fd_leak: None, kind: MapType, delete: bool) -> None:
    key_size = 8 if kind == MapType.LPM_TRIE else 4
    flags = pybpf.MapFlags.NO_PREALLOC if kind == MapType.LPM_TRIE else 0
    first = Map.create(type=kind, key_size=key_size, value_size=8, max_entries=8, flags=flags)
    for i in range(4):
        first[(32 << 32 | i).to_bytes(8, "little") if kind == MapType.LPM_TRIE else i] = i
    batch_size = 1
    walk = first.lookup_and_delete_batch(batch_size) if delete and kind == MapType.HASH else (
        first.lookup_batch(batch_size) if kind == MapType.HASH else first.items())
    next(walk)
    number = first.fd
    first.close()
    with Map.create(type=kind, key_size=key_size, value_size=8, max_entries=8, flags=flags) as second:
        assert second.fd == number  # the kernel reused the number: the old walk must not reach it
        for i in range(4):
            second[(32 << 32 | i).to_bytes(8, "little") if kind == MapType.LPM_TRIE else i] = 100 + i
        rest = []
        try:
            rest = [value for _, value in walk]  # what the first call already fetched may still come
            ended = True
        except ValueError as err:
            assert "closed map" in str(err)
            ended = False
        assert all((value if isinstance(value, int) else int.from_bytes(value, "little")) < 100 for value in rest)
        assert ended or rest == []  # the walk never read the second map: it ended or failed
        assert len(list(second.keys())) == 4


def test_close_racing_updates_never_lands_elsewhere(no_fd_leak: None) -> None:
    """Threads update a map while it is closed and new maps take fd numbers: every update lands
    on the map it was meant for or fails with the closed-map error, nothing else."""
    errors: list[BaseException] = []
    stop = time.monotonic() + 1.0
    victims: list[Map] = []
    strays = 0
    while time.monotonic() < stop and len(victims) < 40:
        target = Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=64)
        victims.append(target)

        def hammer(m: Map = target) -> None:
            for i in range(2000):
                try:
                    m[i % 64] = 0xDEAD
                except ValueError as err:
                    if "closed map" not in str(err):
                        errors.append(err)
                    return
                except BaseException as err:  # noqa: BLE001 - any other error is the bug we look for
                    errors.append(err)
                    return

        workers = [threading.Thread(target=hammer) for _ in range(2)]
        for w in workers:
            w.start()
        time.sleep(0.0005)
        target.close()
        with Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=64) as fresh:
            time.sleep(0.0005)
            strays += sum(1 for _ in fresh.keys())
        for w in workers:
            w.join(10)
    assert not errors, errors[:3]
    assert strays == 0
    del victims


def test_closed_objects_say_so(no_fd_leak: None) -> None:
    m = Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=4)
    m.close()
    for call in (lambda: m[1], lambda: m.update(1, 1), lambda: m.delete(1), lambda: list(m.items()), m.info,
                 lambda: m.update_batch([1], [1]), lambda: m.pin("/sys/fs/bpf/x")):
        with pytest.raises(ValueError, match="closed map"):
            call()


# ---- integers are range-checked before they reach a kernel struct ------------------------------


def test_ids_do_not_wrap(no_fd_leak: None) -> None:
    with Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=4) as m, _prog() as p:
        for opener, ident in ((Map.from_id, m.id), (Program.from_id, p.id), (Link.from_id, 1)):
            with pytest.raises(ValueError, match="id .* out of range"):
                opener(2**32 + ident)
            with pytest.raises(ValueError, match="out of range"):
                opener(-1)


@pytest.mark.parametrize("field", ["repeat", "flags", "cpu", "batch_size"])
@pytest.mark.parametrize("bad", [-1, 2**32])
def test_test_run_arguments_do_not_wrap(no_fd_leak: None, field: str, bad: int) -> None:
    with _prog() as p:
        with pytest.raises(ValueError, match=f"{field} .* out of range"):
            p.test_run(bytes(64), **{field: bad})
        assert p.test_run(bytes(64)).retval == 0  # the default runs once on every type


@pytest.mark.parametrize("changes", [{"flags": -1}, {"flags": 2**32}, {"numa_node": -1}, {"numa_node": 2**31},
                                     {"max_entries": 2**32}, {"map_extra": -1}])
def test_map_spec_integers_are_checked(changes: dict[str, int]) -> None:
    field = next(iter(changes))
    with pytest.raises(ValueError, match=f"MapSpec.{field}"):
        MapSpec(MapType.HASH, 4, 4, **{"max_entries": 4, **changes}).validate()


def test_update_flags_are_checked(no_fd_leak: None) -> None:
    with Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=4) as m:
        for bad in (-1, 8, 2**64):
            with pytest.raises(ValueError, match="update flags"):
                m.update(1, 1, bad)


# ---- the kernel says what an fd holds -----------------------------------------------------------


def test_wrong_kind_is_refused(no_fd_leak: None, pin_dir: Path) -> None:
    with Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=4) as m, _prog() as p:
        m.pin(pin_dir / "map")
        p.pin(pin_dir / "prog")
        with pytest.raises(TypeError, match="holds a program, not a map"):
            Map.from_pin(pin_dir / "prog")
        with pytest.raises(TypeError, match="holds a program, not a map"):
            Map.from_fd(p.fd)
        with pytest.raises(TypeError, match="holds a map, not a program"):
            Program.from_pin(pin_dir / "map")
        with pytest.raises(TypeError, match="holds a map, not a link"):
            Link.from_pin(pin_dir / "map")
        with pytest.raises(TypeError, match="holds a map, not a program"):
            Program.from_fd(m.fd)


# ---- pins cannot be redirected ------------------------------------------------------------------


def test_nul_in_a_pin_path_is_refused(no_fd_leak: None, pin_dir: Path) -> None:
    with Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=4) as m:
        with pytest.raises(ValueError, match="NUL"):
            m.pin(f"{pin_dir}/a\0b")
        with pytest.raises(ValueError, match="NUL"):
            Map.from_pin(f"{pin_dir}/a\0b")
        assert os.listdir(pin_dir) == []


def test_planted_symlinks_are_not_followed(no_fd_leak: None, pin_dir: Path) -> None:
    with Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=4, name="real") as m:
        m.pin(pin_dir / "real")
        os.symlink(pin_dir / "real", pin_dir / "planted")
        with pytest.raises(UnsafePathError, match="symlink"):
            Map.from_pin(pin_dir / "planted")
        os.mkdir(pin_dir / "dir")
        os.symlink(pin_dir / "dir", pin_dir / "linked_dir")
        with pytest.raises(UnsafePathError, match="symlink"):
            m.pin(pin_dir / "linked_dir" / "again")
        assert os.listdir(pin_dir / "dir") == []


def test_directories_others_control_are_refused(no_fd_leak: None, pin_dir: Path) -> None:
    theirs = pin_dir / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)  # made first by another user (nobody)
    with Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=4) as m:
        with pytest.raises(UnsafePathError, match="belongs to uid 65534"):
            m.pin(theirs / "pin")
        with pytest.raises(UnsafePathError, match="belongs to uid 65534"):
            make_pin_dir(theirs)
        open_dir = pin_dir / "open"
        open_dir.mkdir()
        os.chmod(open_dir, 0o777)  # writable by anyone and not sticky
        with pytest.raises(UnsafePathError, match="writable by others"):
            m.pin(open_dir / "pin")
        sticky = pin_dir / "sticky"
        sticky.mkdir()
        os.chmod(sticky, 0o1777)  # like bpffs itself: usable
        m.pin(sticky / "pin")
        planted = sticky / "planted"
        m.pin(planted)
        os.chown(planted, 65534, 65534, follow_symlinks=False)  # a pin another user left there
        with pytest.raises(UnsafePathError, match="belongs to uid 65534"):
            Map.from_pin(planted, owner_only=True)
        Map.from_pin(planted).close()  # named explicitly: the caller chose it


def test_pin_directories_are_private_whatever_the_umask(pin_dir: Path) -> None:
    old = os.umask(0)
    try:
        made = make_pin_dir(pin_dir / "a" / "b")
        shared = make_pin_dir(pin_dir / "shared", 0o755)
    finally:
        os.umask(old)
    assert os.stat(made).st_mode & 0o7777 == 0o700 and os.stat(made.parent).st_mode & 0o7777 == 0o700
    assert os.stat(shared).st_mode & 0o7777 == 0o755


def test_pinning_outside_bpffs_says_so(no_fd_leak: None, tmp_path: Path) -> None:
    with Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=4) as m:
        with pytest.raises(BPFError, match="not on a bpf file system") as caught:
            m.pin(tmp_path / "pin")
        assert "CAP_BPF" not in str(caught.value)
        regular = tmp_path / "regular"
        regular.write_text("not a pin")
        with pytest.raises(BPFError, match="not on a bpf file system") as caught:
            Map.from_pin(regular)
        assert "CAP_BPF" not in str(caught.value)


# ---- bad arguments are refused by name ---------------------------------------------------------


class _WithPointer(ctypes.Structure):
    _fields_ = [("n", ctypes.c_uint32), ("name", ctypes.c_char_p)]


@pytest.mark.parametrize("value", [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), _WithPointer,
                                   _WithPointer * 2])
def test_pointer_types_are_refused(value: object) -> None:
    with pytest.raises(TypeError, match="pointer"):
        MapSpec(MapType.HASH, key=ctypes.c_uint32, value=value, max_entries=4)


def test_sizes_must_agree_with_types() -> None:
    with pytest.raises(ValueError, match="MapSpec.key_size: 8 disagrees with key type c_uint"):
        MapSpec(MapType.HASH, key=ctypes.c_uint32, key_size=8, value_size=4, max_entries=4).validate()


def test_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="MapSpec.inner_map"):
        MapSpec(MapType.ARRAY_OF_MAPS, 4, 4, 4, inner_map="x").validate()
    with pytest.raises(TypeError, match="sock"):
        pybpf.socket_cookie(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ProgramSpec.insns\[0\] must be an Insn"):
        ProgramSpec(ProgramType.XDP, [1, 2, 3]).validate()  # type: ignore[list-item]
    with pytest.raises(TypeError, match="ProgramSpec.insns must be"):
        ProgramSpec(ProgramType.XDP, "mov r0, 0").validate()  # type: ignore[arg-type]


def test_a_live_map_is_an_inner_template(no_fd_leak: None) -> None:
    with Map.create(type=MapType.ARRAY, key_size=4, value_size=8, max_entries=2) as template, \
            Map.create(type=MapType.ARRAY_OF_MAPS, key_size=4, value_size=4, max_entries=2, inner_map=template) as outer:
        outer[0] = template
        assert outer[0] == template.id


def test_lookup_and_delete_batch(no_fd_leak: None) -> None:
    with Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=ctypes.c_uint32, max_entries=16) as m:
        m.update_batch(range(10), range(10, 20))
        assert dict(m.lookup_and_delete_batch(batch_size=3)) == {i: i + 10 for i in range(10)}
        assert list(m.keys()) == []


def test_missing_key_error_shows_bytes_as_typed(no_fd_leak: None) -> None:
    with Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=4) as m:
        with pytest.raises(KeyError) as caught:
            m[b"\t\0\0\0"]
        assert "0x09 0x00 0x00 0x00" in str(caught.value) and "b'" not in str(caught.value)


def test_socket_cookie_of_a_non_socket_fd() -> None:
    with open(os.devnull) as f, socket.socket() as s:
        with pytest.raises(TypeError, match="not a socket"):
            pybpf.socket_cookie(f.fileno())
        assert pybpf.socket_cookie(s.fileno()) == pybpf.socket_cookie(s)
