"""Loading objects into the kernel: maps as the C declares them, static values, pinning, global
data, verifier failures cleaned up, and loaded programs that move traffic."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

import probes

from pybpf import AttachType, BPFError, BtfHandle, MapFlags, MapType, PermissionDeniedError, ProgramType, VerifierError
from pybpf.collection import Collection, CollectionSpec, load
from test_elf import objects  # noqa: F401 - the session fixture compiling tests/bpf/*.c

BPFTOOL = shutil.which("bpftool")
XDP_DROP, XDP_PASS = 1, 2


def bpftool_map(map_id: int) -> dict:
    """``bpftool map show`` of one map, as JSON."""
    if BPFTOOL is None:
        pytest.skip("bpftool is not installed")
    done = subprocess.run([BPFTOOL, "-j", "map", "show", "id", str(map_id)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def u32(value: bytes | int) -> int:
    return value if isinstance(value, int) else struct.unpack("=I", value)[0]


# ---- the seeds -----------------------------------------------------------------------------------


SEED_MAPS = {
    # name: (type, bpftool's name of it, key size, value size, max_entries, flags)
    "my_map": (MapType.HASH, "hash", 4, 4, 100, MapFlags.NO_PREALLOC),
    "icmpcnt": (MapType.ARRAY, "array", 4, 12, 16, 0),
    "inner_map": (MapType.ARRAY, "array", 4, 4, 4, 0),
    "m_array_of_maps": (MapType.ARRAY_OF_MAPS, "array_of_maps", 4, 4, 8, 0),
    "prog_array_init": (MapType.PROG_ARRAY, "prog_array", 4, 4, 2, 0),
}


def test_seed_maps_are_what_the_c_says(objects: dict[str, Path], no_fd_leak: None) -> None:
    with load(objects["seed_maps"]) as loaded:
        for name, (kind, tool_kind, key, value, entries, flags) in SEED_MAPS.items():
            info = loaded.maps[name].info()
            assert (info.type, info.name, info.key_size, info.value_size, info.max_entries, info.flags) == (kind, name, key, value, entries, flags)
            shown = bpftool_map(info.id)
            assert (shown["type"], shown["name"], shown["bytes_key"], shown["bytes_value"], shown["max_entries"], shown["flags"]) == (
                tool_kind, name, key, value, entries, int(flags))
        icmpcnt = loaded.maps["icmpcnt"].info()
        with BtfHandle.from_id(icmpcnt.btf_id) as handle:
            assert handle.btf().type_by_id(icmpcnt.btf_value_type_id).name == "my_value"
        assert loaded.maps["my_map"].info().btf_id == 0  # legacy maps have no types


def test_static_values_are_visible(objects: dict[str, Path]) -> None:
    with load(objects["seed_maps"]) as loaded:
        outer = loaded.maps["m_array_of_maps"]
        assert outer[0] == loaded.maps["inner_map"].id
        assert [outer.get(slot) for slot in range(1, 8)] == [None] * 7
        tail = loaded.maps["prog_array_init"]
        assert tail[1] == loaded.programs["tailcall_1"].id and tail.get(0) is None


def test_seed_programs_run_through_every_map(objects: dict[str, Path]) -> None:
    with load(objects["seed_maps"]) as loaded:
        result = loaded.programs["entry"].test_run(bytes(64))
        assert result.retval == XDP_DROP  # tail-called into tailcall_1 through the static slot
        assert u32(loaded.maps["my_map"][64]) == 1
        assert struct.unpack("=3i", loaded.maps["icmpcnt"][0]) == (1, 0, 0)
        assert struct.unpack("=3i", loaded.maps["icmpcnt"][1]) == (0, 1, 0)
        assert u32(loaded.maps["inner_map"][2]) == 1  # reached through the outer map's static slot
        info = loaded.programs["entry"].info()
        assert info.btf_id and set(info.map_ids) == {loaded.maps[n].id for n in ("my_map", "icmpcnt", "m_array_of_maps", "prog_array_init")}


def test_xskmap_seed(objects: dict[str, Path], no_fd_leak: None) -> None:
    with load(objects["xskmap"]) as loaded:
        info = loaded.maps["xsks_map"].info()
        assert (info.type, info.key_size, info.value_size, info.max_entries, info.btf_id) == (MapType.XSKMAP, 4, 4, 64, 0)
        assert bpftool_map(info.id)["type"] == "xskmap"
        assert loaded.programs["xsk_redir_prog"].test_run(bytes(64)).retval == XDP_PASS  # no socket at queue 0


# ---- everything else ---------------------------------------------------------------------------


@pytest.fixture
def features(objects: dict[str, Path], pin_dir: Path) -> Collection:
    probes.skip_if(probes.map_type("BLOOM_FILTER"))  # features.c defines one (Linux 5.16)
    spec = CollectionSpec.from_file(objects["features"])
    spec.programs["untyped"].type = ProgramType.SOCKET_FILTER
    loaded = spec.load(pin_root=pin_dir)
    yield loaded
    loaded.close()


def test_global_data_and_subprograms(features: Collection) -> None:
    with_calls = features.programs["with_calls"]
    assert with_calls.test_run(bytes(64)).retval == XDP_PASS
    assert struct.unpack("=Q", features.maps[".data"][0]) == (101,)
    last_len, hidden_total = struct.unpack_from("=QI", features.maps[".bss"][0])
    assert (last_len, hidden_total) == (64 + 6 + 6, 1 + 2 + 3)  # bpf_loop sum, scale(2), global_sum(1, 2)
    assert features.programs["classify"].test_run(bytes(64)).retval == 0


def test_rodata_is_frozen(features: Collection) -> None:
    rodata = features.maps[".rodata"]
    assert rodata.flags == MapFlags.RDONLY_PROG | MapFlags.MMAPABLE and rodata.name == "features.rodata"
    with pytest.raises(PermissionDeniedError):
        rodata[0] = bytes(rodata.value_size)
    assert b"hello\0" in bytes(rodata[0])


def test_btf_only_where_the_kernel_takes_it(features: Collection) -> None:
    assert features.maps["stats"].info().btf_id
    assert features.maps[".bss"].info().btf_value_type_id
    for name in ("socks", "socks_by_cookie", "by_hash"):
        assert features.maps[name].info().btf_id == 0, name  # refused (524) for these types: none given
    assert features.programs["with_calls"].info().btf_id


def test_every_attribute_reaches_the_kernel(features: Collection, pin_dir: Path) -> None:
    sized, seen = features.maps["sized"].info(), features.maps["seen"].info()
    assert (sized.key_size, sized.value_size, sized.max_entries, sized.flags) == (8, 16, 32, MapFlags.NO_PREALLOC | MapFlags.NUMA_NODE)
    assert (seen.type, seen.map_extra, seen.max_entries) == (MapType.BLOOM_FILTER, 3, 128)
    assert os.listdir(pin_dir) == ["shared"]
    by_hash = features.maps["by_hash"]
    assert (by_hash[1], by_hash[3]) == (features.maps["first"].id, features.maps["second"].id)


def test_untyped_program_refused_before_any_syscall(objects: dict[str, Path], no_fd_leak: None) -> None:
    with pytest.raises(ValueError, match=r"'untyped'.*'unknown_section'"):
        load(objects["features"])


def test_spec_is_editable(objects: dict[str, Path], no_fd_leak: None) -> None:
    spec = CollectionSpec.from_file(objects["seed_maps"])
    spec.maps["icmpcnt"].max_entries = 64
    del spec.programs["tailcall_1"]
    with pytest.raises(ValueError, match="'prog_array_init'.*'tailcall_1'"):
        spec.load()
    spec.maps["prog_array_init"].contents = ()
    with spec.load() as loaded:
        assert loaded.maps["icmpcnt"].max_entries == loaded.maps["icmpcnt"].info().max_entries == 64
        assert set(loaded.programs) == {"entry"}
    del spec.maps["icmpcnt"]
    with pytest.raises(ValueError, match="'entry' refers to map 'icmpcnt'"):
        spec.load()


# ---- pinning -----------------------------------------------------------------------------------


def test_pinned_map_is_reused(objects: dict[str, Path], pin_dir: Path, no_fd_leak: None) -> None:
    with load(objects["pinned"], pin_root=pin_dir) as first, load(objects["pinned"], pin_root=pin_dir) as second:
        assert os.listdir(pin_dir) == ["pinned_counts"]
        assert first.maps["pinned_counts"].id == second.maps["pinned_counts"].id
        first.maps["pinned_counts"][7] = 42
        assert second.maps["pinned_counts"][7] == 42  # typed from the pinned map's BTF
    assert os.listdir(pin_dir) == ["pinned_counts"]  # the pin outlives the collections


def test_pinned_map_mismatch_is_refused_with_a_diff(objects: dict[str, Path], pin_dir: Path, no_fd_leak: None) -> None:
    with load(objects["pinned"], pin_root=pin_dir):
        with pytest.raises(BPFError, match=r"max_entries: 32 \(object\) != 16 \(pinned\)") as caught:
            load(objects["pinned32"], pin_root=pin_dir)
    assert "pinned_counts" in str(caught.value) and str(pin_dir) in str(caught.value)


# ---- failures ----------------------------------------------------------------------------------


def test_verifier_failure_reports_the_log_and_undoes_everything(objects: dict[str, Path], pin_dir: Path, no_fd_leak: None) -> None:
    with pytest.raises(VerifierError) as caught:
        load(objects["rejected"], pin_root=pin_dir)
    assert "map_value_or_null" in caught.value.log
    assert "return *value;" in caught.value.log  # the source line: line_info reached the kernel
    assert caught.value.name == "unchecked"
    assert os.listdir(pin_dir) == []  # the map pinned by this load is unpinned again


# ---- traffic -----------------------------------------------------------------------------------


MESSAGES = (b"ping", b"a longer message through the verdict program")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_sk_skb_verdict_echo_moves_traffic(objects: dict[str, Path], no_fd_leak: None) -> None:
    """The loaded sk_skb/verdict program sends what the server socket receives back to the client."""
    if probes.release() < (5, 13):
        probes.skip(f"the SK_SKB_VERDICT attach type needs Linux 5.13; this is {probes.running()}")
    with load(objects["sockets"]) as loaded:
        sock_map, echo = loaded.maps["sock_map"], loaded.programs["echo"]
        echo.attach(sock_map, AttachType.SK_SKB_VERDICT)
        with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
            conn, _ = server.accept()
            with conn:
                sock_map[0] = conn
                client.settimeout(5)
                for message in MESSAGES:
                    client.sendall(message)
                    assert _recv_exactly(client, len(message)) == message
                sock_map.delete(0)
        echo.detach(sock_map, AttachType.SK_SKB_VERDICT)
        assert struct.unpack("=Q", loaded.maps[".bss"][0]) == (sum(map(len, MESSAGES)),)
