"""A HASH map and a Python dict driven by the same random operations must agree; threads too."""

from __future__ import annotations

import ctypes
import os
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybpf import KeyExistsError, KeyNotFoundError, Map, MapFullError, MapType, UpdateFlags

CAPACITY = 16
keys = st.integers(min_value=0, max_value=40)
values = st.integers(min_value=0, max_value=2**64 - 1)
flags = st.sampled_from([UpdateFlags.ANY, UpdateFlags.NOEXIST, UpdateFlags.EXIST])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("update"), keys, values, flags),
        st.tuples(st.just("lookup"), keys),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("pop"), keys),
        st.tuples(st.just("batch_update"), st.lists(st.tuples(keys, values), max_size=6, unique_by=lambda kv: kv[0])),
        st.tuples(st.just("batch_delete"), st.lists(keys, max_size=4, unique=True)),
        st.tuples(st.just("clear")),
    ),
    max_size=60,
)


def _apply(m: Map, model: dict[int, int], op: tuple) -> None:
    kind = op[0]
    if kind == "update":
        _, k, v, fl = op
        if fl == UpdateFlags.NOEXIST and k in model:
            expected: type[Exception] | None = KeyExistsError
        elif fl == UpdateFlags.EXIST and k not in model:
            expected = KeyNotFoundError
        elif k not in model and len(model) >= CAPACITY:
            expected = MapFullError
        else:
            expected = None
        try:
            m.update(k, v, fl)
        except Exception as err:  # noqa: BLE001 - compared with the model's expectation
            assert expected is not None and isinstance(err, expected), (op, err)
            return
        assert expected is None, op
        model[k] = v
    elif kind == "lookup":
        assert m.get(op[1]) == model.get(op[1])
    elif kind == "delete":
        if op[1] in model:
            del m[op[1]]
            del model[op[1]]
        else:
            try:
                del m[op[1]]
            except KeyNotFoundError:
                pass
            else:
                raise AssertionError(f"deleted missing key {op[1]}")
    elif kind == "pop":
        try:
            got = m.pop(op[1])
        except KeyNotFoundError:
            assert op[1] not in model
        else:
            assert got == model.pop(op[1])
    elif kind == "batch_update":
        pairs = op[1]
        new = {k for k, _ in pairs if k not in model}
        if len(model) + len(new) > CAPACITY:
            return  # a partial batch is legal kernel behaviour; the model does not predict it
        if pairs:
            assert m.update_batch([k for k, _ in pairs], [v for _, v in pairs]) == len(pairs)
        model.update(pairs)
    elif kind == "batch_delete":
        present = [k for k in op[1] if k in model]
        if present:
            assert m.delete_batch(present) == len(present)
        for k in present:
            del model[k]
    elif kind == "clear":
        m.clear()
        model.clear()


@settings(max_examples=int(os.environ.get("PYBPF_MODEL_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_hash_map_behaves_like_a_dict(ops: list[tuple]) -> None:
    with Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=CAPACITY) as m:
        model: dict[int, int] = {}
        for op in ops:
            _apply(m, model, op)
            assert len(model) <= CAPACITY
        assert dict(m.items()) == model
        assert sorted(m.keys()) == sorted(model)


def test_threads_share_one_map_safely(no_fd_leak) -> None:
    """Each thread writes and reads its own key range through one Map: no cross-talk."""
    per_thread, threads = 2000, 4
    errors: list[BaseException] = []
    with Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=per_thread * threads) as m:

        def work(t: int) -> None:
            try:
                base = t * per_thread
                for i in range(base, base + per_thread):
                    m[i] = i * 7 + t
                    assert m[i] == i * 7 + t
                for i in range(base, base + per_thread, 2):
                    del m[i]
                for i in range(base, base + per_thread):
                    assert m.get(i) == (None if (i - base) % 2 == 0 else i * 7 + t)
            except BaseException as err:  # noqa: BLE001 - reported by the main thread
                errors.append(err)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
        assert not errors, errors[0]
        assert len(m) == per_thread * threads // 2


def test_iteration_while_another_thread_deletes() -> None:
    n = 3000
    with Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=n) as m:
        m.update_batch(range(n), range(n))
        stop = threading.Event()

        def deleter() -> None:
            for i in range(0, n, 3):
                if stop.is_set():
                    return
                m.pop(i, None)

        t = threading.Thread(target=deleter)
        t.start()
        try:
            for _ in range(5):
                seen = list(m.keys())
                assert len(seen) == len(set(seen))  # no duplicates, terminates
                assert set(range(1, n, 3)) <= set(seen)  # never-deleted keys always seen
        finally:
            stop.set()
            t.join(timeout=30)
