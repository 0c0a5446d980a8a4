"""The memory kernel of ``pybpf.testing`` on its own: what it has and says it has not, lifetimes
and ids, real fds, the virtual bpffs, programs with stand-ins, socket maps with real sockets, the
pytest plugin, and the whole memory suite run again in a child without any capability.

Every test here is ``nokernel``: none needs bpf(2).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import pybpf
from pybpf import (
    BPFError,
    KeyNotFoundError,
    Map,
    MapFlags,
    MapSpec,
    MapType,
    NotSupportedError,
    PermissionDeniedError,
    ProgramType,
    UpdateFlags,
    features,
)
from pybpf._sys.traits import MAP_TYPES
from pybpf.programs import Program, ProgramSpec
from pybpf.asm import R0, Assembler
from pybpf.testing import MemoryKernel, memory_kernel
from pybpf.testing.memory.maps import MAP_CLASSES

pytestmark = [pytest.mark.nokernel, pytest.mark.usefixtures("no_fd_leak")]

ROOT = Path(__file__).resolve().parent.parent
CLANG = shutil.which("clang-16") or shutil.which("clang") or "clang"
IN_MEMORY = {MapType.HASH, MapType.ARRAY, MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_HASH,
             MapType.LRU_PERCPU_HASH, MapType.LPM_TRIE, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS,
             MapType.PROG_ARRAY, MapType.SOCKMAP, MapType.SOCKHASH, MapType.REUSEPORT_SOCKARRAY, MapType.QUEUE,
             MapType.STACK, MapType.BLOOM_FILTER, MapType.RINGBUF}
"""The map types the memory kernel has; every other type is refused by name."""


def test_import_needs_no_pytest() -> None:
    code = "import sys, pybpf.testing; assert 'pytest' not in sys.modules and 'hypothesis' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr


def test_every_map_type_is_in_memory_or_refused_by_name() -> None:
    assert set(MAP_CLASSES) == IN_MEMORY
    with memory_kernel(release=(5, 10)):  # a type newer than the release is unknown to it, as to that kernel
        assert not features.have_map_type(MapType.BLOOM_FILTER)
        with pytest.raises(NotSupportedError, match="BLOOM_FILTER maps"):
            Map.create(type=MapType.BLOOM_FILTER, key_size=0, value_size=4, max_entries=4)
    with memory_kernel(release=(6, 18)):
        for map_type in MAP_TYPES:
            assert features.have_map_type(map_type) == (map_type in IN_MEMORY), map_type
        with pytest.raises(NotSupportedError, match="DEVMAP maps are not in the memory kernel") as info:
            Map.create(type=MapType.DEVMAP, key_size=4, value_size=4, max_entries=4)
        assert info.value.errno == errno.EOPNOTSUPP and "create DEVMAP map" in str(info.value)
        with pytest.raises(NotSupportedError, match="USER_RINGBUF maps are not in the memory kernel"):
            Map.create(type=MapType.USER_RINGBUF, max_entries=4096)


def test_fds_are_real_and_ids_are_the_kernels_shape() -> None:
    with memory_kernel():
        a = Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=2, name="first")
        b = Map.create(type=MapType.ARRAY, key_size=4, value_size=4, max_entries=2, name="second")
        assert 0 < a.id < b.id
        assert os.readlink(f"/proc/self/fd/{a.fd}").startswith("/memfd:pybpf-map")
        copy = os.dup(a.fd)  # a dup shares the open file: same map, same access
        try:
            with Map.from_fd(copy) as again:
                again[1] = 7
            assert a[1] == (7).to_bytes(4, sys.byteorder)
        finally:
            os.close(copy)
        r, w = os.pipe()
        try:
            with pytest.raises(TypeError, match="holds no BPF object"):
                Map.from_fd(r)
        finally:
            os.close(r)
            os.close(w)
        a.close()
        b.close()


def test_closed_maps_disappear_and_pinned_ones_stay() -> None:
    with memory_kernel() as k:
        m = Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=2, name="kept")
        gone = Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=2, name="gone")
        m[1] = 1
        m.pin("/sys/fs/bpf/kept")
        kept_id, gone_id = m.id, gone.id
        m.close()
        gone.close()
        assert [info.name for info in pybpf.maps()] == ["kept"]
        with pytest.raises(BPFError, match="No such file") as gone_error:
            Map.from_id(gone_id)
        assert gone_error.value.errno == errno.ENOENT
        with Map.from_id(kept_id) as again:  # no fd was left: a new one is made for the pinned map
            assert again[1] == (1).to_bytes(4, sys.byteorder)
        k.fs.unlink("/sys/fs/bpf/kept")
        assert list(pybpf.maps()) == []
        with pytest.raises(BPFError, match="No such file"):
            Map.from_id(kept_id)


def test_inner_maps_live_while_held() -> None:
    with memory_kernel():
        outer = Map.create(type=MapType.ARRAY_OF_MAPS, key_size=4, value_size=4, max_entries=2,
                           inner_map=MapSpec(MapType.ARRAY, 4, 4, 2))
        inner = Map.create(MapSpec(MapType.ARRAY, 4, 4, 2, name="inner"))
        inner[0] = 5
        outer[1] = inner
        inner_id = inner.id
        inner.close()
        assert outer[1] == inner_id and {i.name for i in pybpf.maps()} == {"", "inner"}
        with Map.from_id(inner_id) as again:
            assert again[0] == (5).to_bytes(4, sys.byteorder)
        del outer[1]
        assert {i.name for i in pybpf.maps()} == {""}
        with pytest.raises(KeyNotFoundError):
            outer.lookup(1)
        with pytest.raises(BPFError) as wrong:
            with Map.create(MapSpec(MapType.ARRAY, 4, 4, 3)) as other_size:
                outer[0] = other_size  # arrays must match the template's max_entries too
        assert wrong.value.errno == errno.EINVAL
        outer.close()


def test_pins_stay_in_the_virtual_bpffs() -> None:
    with memory_kernel() as k:
        directory = pybpf.make_pin_dir("/sys/fs/bpf/pybpf-memory-only/nested")
        assert not os.path.exists("/sys/fs/bpf/pybpf-memory-only")  # nothing on the machine
        assert k.fs.exists(directory) and oct(k.fs.lstat(str(directory)).st_mode & 0o7777) == "0o700"
        with Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=2) as m:
            m.pin(directory / "m")
            with pytest.raises(BPFError) as exists:
                m.pin(directory / "m")
            assert exists.value.errno == errno.EEXIST
            with pytest.raises(FileNotFoundError):
                m.pin("/sys/fs/bpf/no-such-dir/m")  # pybpf's own check, as on the machine
            with pytest.raises(BPFError) as off:
                m.pin("/tmp/not-bpffs")
            assert off.value.errno == errno.EPERM and "not on a bpf file system" in str(off.value)
            with Map.from_pin(directory / "m", owner_only=True) as again:
                assert again.id == m.id
        with pytest.raises(BPFError) as missing:
            Map.from_pin(directory / "nope")
        assert missing.value.errno == errno.ENOENT
        with pytest.raises(BPFError) as not_a_pin:
            Map.from_pin(directory)
        assert not_a_pin.value.errno == errno.EACCES
        assert k.fs.listdir("/sys/fs/bpf") == ["pybpf-memory-only"]
        k.fs.rmtree("/sys/fs/bpf/pybpf-memory-only")
        assert k.fs.listdir("/sys/fs/bpf") == [] and list(pybpf.maps()) == []


def test_access_modes_belong_to_the_fd() -> None:
    with memory_kernel() as k:
        ro = Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=2, flags=MapFlags.RDONLY)
        with pytest.raises(PermissionDeniedError):
            ro[1] = 1
        assert not ro.info().flags & MapFlags.RDONLY  # the kernel keeps RDONLY/WRONLY on the fd only
        with Map.from_id(ro.id) as rw:
            rw[1] = 1
        assert ro[1] == (1).to_bytes(4, sys.byteorder)
        wo = Map.create(type=MapType.HASH, key_size=4, value_size=4, max_entries=2, flags=MapFlags.WRONLY)
        wo[2] = 2
        with pytest.raises(PermissionDeniedError):
            wo.lookup(2)
        ro.pin("/sys/fs/bpf/ro")
        with Map.from_pin("/sys/fs/bpf/ro", readonly=True) as pinned:
            with pytest.raises(PermissionDeniedError):
                pinned[3] = 3
        k.fs.unlink("/sys/fs/bpf/ro")
        ro.close()
        wo.close()


def test_freeze_and_mmap() -> None:
    with memory_kernel(release=(6, 18)):  # a second freeze: EPERM from 6.12 (releases.py), EBUSY before
        arr = Map.create(type=MapType.ARRAY, key_size=4, value=ctypes.c_uint64, max_entries=4, flags=MapFlags.MMAPABLE)
        view = arr.mmap().cast("Q")
        view[2] = 99
        assert arr[2] == 99
        arr[3] = 5
        assert view[3] == 5
        view.release()
        with pytest.raises(BPFError) as busy:
            arr.freeze()  # still mapped writable (the Map keeps its mapping until closed)
        assert busy.value.errno == errno.EBUSY
        arr.close()
        frozen = Map.create(type=MapType.ARRAY, key_size=4, value=ctypes.c_uint64, max_entries=4, flags=MapFlags.MMAPABLE)
        frozen[1] = 3
        frozen.freeze()
        with pytest.raises(PermissionDeniedError):
            frozen[1] = 4
        with pytest.raises(PermissionDeniedError):
            frozen.freeze()  # the fd cannot write any more: EPERM, as 6.x says
        ro = frozen.mmap()
        assert ro.readonly and int.from_bytes(ro[8:16], sys.byteorder) == 3
        ro.release()
        frozen.close()


def test_lru_evicts_the_least_recently_updated_when_full() -> None:
    with memory_kernel():
        with Map.create(type=MapType.LRU_HASH, key=ctypes.c_uint32, value=ctypes.c_uint32, max_entries=3) as lru:
            lru[1], lru[2], lru[3] = 1, 2, 3
            lru[1] = 10  # updated: now the most recent
            assert lru[2] == 2  # a lookup from user space does not count as use
            lru[4] = 4
            assert sorted(lru.keys()) == [1, 3, 4]


def test_lpm_trie_order_is_the_kernels_post_order() -> None:
    def key(prefix: int, *octets: int) -> bytes:
        return prefix.to_bytes(4, sys.byteorder) + bytes(octets)

    with memory_kernel():
        with Map.create(type=MapType.LPM_TRIE, key_size=8, value_size=1, max_entries=8, flags=MapFlags.NO_PREALLOC) as t:
            for k in (key(16, 192, 168, 0, 0), key(24, 192, 168, 0, 0), key(24, 192, 168, 128, 0), key(24, 192, 168, 1, 0)):
                t[k] = b"x"
            assert list(t.keys()) == [key(24, 192, 168, 0, 0), key(24, 192, 168, 1, 0), key(24, 192, 168, 128, 0),
                                      key(16, 192, 168, 0, 0)]  # the example of the kernel's lpm_trie.c
            assert t[key(32, 192, 168, 1, 9)] == b"x"
            with pytest.raises(KeyNotFoundError):
                t[key(32, 10, 0, 0, 1)]


@pytest.mark.parametrize("release, full", [((6, 12), errno.ENOSPC), ((6, 18), None)])
def test_release_differences_follow_the_release_asked_for(release: tuple[int, int], full: int | None) -> None:
    """Before 6.14 a full LPM trie refused even an in-place update; the memory kernel follows the
    release it emulates (the running one unless told)."""
    with memory_kernel(release=release):
        with Map.create(type=MapType.LPM_TRIE, key_size=5, value_size=1, max_entries=1, flags=MapFlags.NO_PREALLOC) as t:
            k = (8).to_bytes(4, sys.byteorder) + b"\x0a"
            t[k] = b"a"
            if full is None:
                t[k] = b"b"
                assert t[k] == b"b"
                with pytest.raises(BPFError) as exists:
                    t.update(k, b"c", UpdateFlags.NOEXIST)
                assert exists.value.errno == errno.EEXIST
            else:
                with pytest.raises(BPFError) as refused:
                    t[k] = b"b"
                assert refused.value.errno == full


def test_socket_maps_hold_real_sockets() -> None:
    with socket.socket() as listener, memory_kernel():
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with server, pybpf.SockMap.create(4) as sm, pybpf.SockHash.create(4) as sh:
            sm[0] = client
            sh[b"\x01\x00\x00\x00"] = server
            assert sm[0] == pybpf.socket_cookie(client) and sh[1] == pybpf.socket_cookie(server)
            with pytest.raises(KeyNotFoundError, match="empty"):
                del sm[1]  # an empty SOCKMAP slot: EINVAL from the kernel, KeyNotFoundError here
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unbound, pytest.raises(BPFError) as refused:
                sm[1] = unbound
            assert refused.value.errno == errno.EOPNOTSUPP and "refuses this socket" in str(refused.value)
            with pytest.raises(pybpf.IndexOutOfRangeError):
                sm[4] = client
            client.close()  # the kernel drops a socket from every map when it closes
            with pytest.raises(KeyNotFoundError):
                sm.lookup(0)
            with pytest.raises(NotSupportedError):
                list(sh.lookup_batch())
        with socket.socket() as rp, pybpf.ReuseportSockArray.create(2) as ra, pybpf.SockMap.create(2) as sm2:
            rp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            rp.bind(("127.0.0.1", 0))
            rp.listen()
            ra[0] = rp
            assert ra[0] == pybpf.socket_cookie(rp)
            with pytest.raises(BPFError) as busy:
                sm2[0] = rp
            assert busy.value.errno == errno.EBUSY


def test_programs_need_a_stand_in() -> None:
    spec = ProgramSpec(ProgramType.XDP, Assembler().mov64(R0, 2).exit(), name="xdp_pass")
    with memory_kernel():
        with pytest.raises(NotSupportedError, match="not in the memory kernel") as info:
            Program.load(spec)
        assert "stand-in" in str(info.value) and "xdp_pass" in str(info.value)
        assert not features.have_program_type(ProgramType.XDP)
    with memory_kernel(programs={"xdp_pass": lambda data: (2, data[::-1])}) as k:
        with Program.load(spec) as prog:
            run = prog.test_run(b"abc")
            assert (run.retval, run.data) == (2, b"cba") and prog.info().type == ProgramType.XDP
            with Map.create(type=MapType.PROG_ARRAY, key_size=4, value_size=4, max_entries=2) as jumps:
                jumps[0] = prog
                assert jumps[0] == prog.id
            with pytest.raises(NotSupportedError) as attach:
                prog.attach_xdp("lo")  # (pybpf's attach words the error itself: EOPNOTSUPP)
            assert attach.value.errno == errno.EOPNOTSUPP
        k.programs["later"] = lambda data: 0
        with Program.load(spec.copy(name="later")) as later:
            assert later.test_run(b"").retval == 0


def test_threads_share_a_memory_map() -> None:
    errors: list[BaseException] = []
    with memory_kernel(), Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=ctypes.c_uint64,
                                     max_entries=4000) as m:
        def work(t: int) -> None:
            try:
                for i in range(t * 1000, t * 1000 + 1000):
                    m[i] = i
                    assert m[i] == i
                for i in range(t * 1000, t * 1000 + 1000, 2):
                    del m[i]
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[0]
        assert len(m) == 2000 and len(list(m.keys())) == len(set(m.keys()))


def test_maps_outlive_the_block_as_plain_objects() -> None:
    with memory_kernel():
        m = Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=ctypes.c_uint32, max_entries=2)
        m[1] = 1
    assert m[1] == 1  # bound to its memory object; the kernel's ids and pins are gone
    m.close()


def test_plugin_fixture_and_marker(tmp_path: Path) -> None:
    test = tmp_path / "test_uses_fixture.py"
    test.write_text(
        "import ctypes, pytest\n"
        "from pybpf import Map, MapType\n"
        "def test_counts(memory_kernel):\n"
        "    m = Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=4)\n"
        "    m[1] = 2\n"
        "    assert memory_kernel.maps()[0].id == m.id\n"
        "@pytest.mark.memory_kernel(programs={'p': lambda data: 1})\n"
        "def test_marker(memory_kernel):\n"
        "    assert 'p' in memory_kernel.programs\n"
    )
    env = dict(os.environ)
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)  # the kernel matrix sets it; the entry point is what is tested
    for extra in ([], ["-p", "pybpf.testing.plugin"]):
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, str(test)],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert out.returncode == 0 and "2 passed" in out.stdout, out.stdout + out.stderr


UNPRIVILEGED = ["setpriv", "--securebits=+noroot,+noroot_locked", "--inh-caps=-all", "--bounding-set=-all", "--"]


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/setpriv"), reason="needs root and setpriv to drop privileges")
def test_the_memory_suite_passes_without_any_capability() -> None:
    """The memory-kernel tests again, in a child whose capabilities are all gone (uid 0 kept so the
    files stay readable): what a CI runner without CAP_BPF sees."""
    if os.environ.get("PYBPF_UNPRIVILEGED_CHILD"):
        return  # the child itself
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "PYBPF_UNPRIVILEGED_CHILD": "1"}
    env.pop("PYBPF_REQUIRE_KERNEL", None)
    files = ["tests/test_memory_kernel.py", "tests/test_maps.py", "tests/test_maps_model.py"]
    out = subprocess.run([*UNPRIVILEGED, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "nokernel",
                          "-k", "not passes_without_any_capability", *files],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout
    capabilities = subprocess.run([*UNPRIVILEGED, "grep", "CapEff", "/proc/self/status"], capture_output=True, text=True)
    assert capabilities.stdout.split()[-1] == "0000000000000000"


def test_collections_load_with_stand_ins(tmp_path: Path) -> None:
    """A control plane tested with its real object file: maps made in memory, programs stood in
    for, pins (``LIBBPF_PIN_BY_NAME``) reused by the next load as on the kernel."""
    obj = tmp_path / "pinned.o"
    subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", f"-I/usr/include/{os.uname().machine}-linux-gnu",
                    "-c", str(ROOT / "tests" / "bpf" / "pinned.c"), "-o", str(obj)], check=True)
    spec = pybpf.CollectionSpec.from_file(obj)
    with memory_kernel(programs={"count": lambda data: 0}) as k:
        with spec.load(pin_root="/sys/fs/bpf/app") as first:
            first.maps["pinned_counts"][1] = 5
            kept = first.maps["pinned_counts"].id
            assert first.programs["count"].test_run(b"").retval == 0
        with spec.load(pin_root="/sys/fs/bpf/app") as second:
            assert second.maps["pinned_counts"].id == kept and second.maps["pinned_counts"][1] == 5
        assert k.fs.listdir("/sys/fs/bpf/app") == ["pinned_counts"]
        k.fs.rmtree("/sys/fs/bpf/app")


def test_ring_buffers_are_read_by_ringbuffer() -> None:
    """The test produces what a program would (``ringbuf_output``); ``pybpf.RingBuffer`` reads it,
    waits for it, skips discarded records, and a full ring refuses more."""
    with memory_kernel() as k:
        with Map.create(type=MapType.RINGBUF, max_entries=4096, name="events") as ring:
            with pybpf.RingBuffer(ring) as reader:
                assert reader.poll(0) == []
                assert k.ringbuf_output(ring, b"first") and k.ringbuf_output(ring, b"gone", discard=True)
                assert k.ringbuf_output(ring, b"second")
                assert reader.poll(0) == [b"first", b"second"]
                threading.Timer(0.05, k.ringbuf_output, (ring, b"later")).start()
                assert reader.poll(5) == [b"later"]
                fitted = 0
                while k.ringbuf_output(ring, bytes(100)):
                    fitted += 1
                assert fitted == 4096 // 112  # 100 bytes + an 8-byte header, 8-aligned
                assert len(reader.poll(0)) == fitted
                for i in range(30):  # past the end of the ring: records wrap around
                    assert k.ringbuf_output(ring, bytes([i]) * (i + 1))
                assert reader.poll(0) == [bytes([i]) * (i + 1) for i in range(30)]
            with pytest.raises(NotSupportedError):
                ring.lookup(b"")
        with pytest.raises(ValueError, match="max_entries"):
            Map.create(type=MapType.RINGBUF, max_entries=1000)


def test_release_rows_name_upstream_and_stable_versions() -> None:
    from pybpf.testing.memory import releases

    lpm = releases.LPM_FLAGS
    assert lpm.in_release((6, 14, 0)) and lpm.in_release((6, 18, 44))
    assert lpm.in_release((6, 12, 118)) and not lpm.in_release((6, 12, 0)) and not lpm.in_release((6, 6, 200))
    assert releases.version_of((6, 1)) == (6, 1, 0) and releases.version_of((6, 1, 5)) == (6, 1, 5)
    assert releases.running()[:2] == tuple(int(x) for x in os.uname().release.split(".")[:2])


def test_per_cpu_batches_decode_lists_with_one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the differential test in a one-CPU VM: a batch of per-CPU values decoded as one
    blob per element when the stride equalled the value size."""
    import pybpf.map.codec as codec

    monkeypatch.setattr(codec, "possible_cpus", lambda: 1)
    field = codec.PerCpuField(8, None, "value")
    assert field.decode_many(bytes(range(16)), 2, 8) == [[bytes(range(8))], [bytes(range(8, 16))]]
