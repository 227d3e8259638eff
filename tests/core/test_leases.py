"""Leases, liveness and pool capacity of remote workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from headwater.core.leases import (
    DEFAULT_POOL,
    LEASE_S,
    WorkerState,
    pool_capacity,
    pool_of,
    pool_wait_reason,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def worker(name: str, pools: tuple[str, ...], slots: int, ago: float = 0.0) -> WorkerState:
    return WorkerState(name, pools, slots, 0, NOW - timedelta(seconds=ago))


def test_only_live_workers_give_slots_and_load_takes_them() -> None:
    workers = [
        worker("a", ("default",), 4),
        worker("b", ("default", "big"), 2),
        worker("c", ("big",), 8, ago=LEASE_S + 1),  # silent for longer than a lease
    ]
    assert pool_capacity(workers, {"default": 5, "big": 1}, NOW) == {"default": 1, "big": 1}
    assert pool_capacity(workers, {"default": 9}, NOW)["default"] == 0


def test_a_stopped_worker_is_not_live() -> None:
    stopped = WorkerState("a", ("default",), 4, 0, NOW, stopped_at=NOW)
    assert pool_capacity([stopped], {}, NOW) == {}


def test_wait_reasons_say_what_is_missing() -> None:
    assert "no live worker serves pool 'x'" in (pool_wait_reason("x", {}) or "")
    assert "free slot" in (pool_wait_reason("x", {"x": 0}) or "")
    assert pool_wait_reason("x", {"x": 1}) is None


def test_the_pool_comes_from_headwater_toml_then_dlt_require_then_default() -> None:
    assert pool_of({"pool": "gpu"}, {"require": {"instance": "large"}}) == "gpu"
    assert pool_of({}, {"require": {"instance": "large"}}) == "large"
    assert pool_of({}, {}) == DEFAULT_POOL


@given(
    st.lists(
        st.tuples(
            st.sets(st.sampled_from(["a", "b", "c"]), min_size=1),
            st.integers(1, 16),
            st.floats(0, 2 * LEASE_S),
        ),
        max_size=8,
    ),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 64)),
)
def test_free_slots_never_negative_nor_more_than_live_slots(
    spec: list[tuple[set[str], int, float]], load: dict[str, int]
) -> None:
    workers = [worker(str(i), tuple(sorted(p)), n, ago) for i, (p, n, ago) in enumerate(spec)]
    free = pool_capacity(workers, load, NOW)
    for pool, n in free.items():
        live = sum(w.slots for w in workers if pool in w.pools and w.is_live(NOW))
        assert 0 <= n <= live
        assert n == max(0, live - load.get(pool, 0))
