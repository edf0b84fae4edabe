"""Stable chunks: a simulated listing of a million items keeps its plan as the source grows."""

from __future__ import annotations

import numpy as np
import pytest

from healthgpt.data.sources.chunks import (
    ChunkPlan,
    assign_chunks,
    chunk_of,
    jump_hash,
    jump_hash_array,
    key_hash,
    key_hashes,
    n_chunks_for,
)

N_ITEMS = 1_000_000


def mimic_like_keys(start: int, stop: int) -> list[str]:
    """Relative paths shaped like MIMIC-CXR-JPG's: long shared prefixes, sequential ids."""
    return [
        f"files/p{10 + i % 10}/p{10_000_000 + i // 3}/s{50_000_000 + i // 2}/{i:08x}.jpg"
        for i in range(start, stop)
    ]


@pytest.fixture(scope="module")
def listing() -> tuple[list[str], np.ndarray]:
    keys = mimic_like_keys(0, N_ITEMS)
    return keys, key_hashes(keys)


def test_golden_values_pin_the_method():
    """Changing the hash would silently reshuffle every source's chunks: it must be a new
    METHOD instead, so these values never change."""
    assert key_hash("files/p10/p10000032/s50414267/02aa804e.jpg") == 0xE80B37D9F3EFF520
    assert [chunk_of(k, 64) for k in ("a", "files/p10/p10000032/s50414267/02aa804e.jpg", "")] == [
        62,
        56,
        55,
    ]
    # The reference implementation's test vectors (dgryski/go-jump).
    cases = [(1, 1, 0), (42, 57, 43), (0xDEAD10CC, 1, 0), (0xDEAD10CC, 666, 361), (256, 1024, 520)]
    assert [jump_hash(key, n) for key, n, _ in cases] == [chunk for *_, chunk in cases]


def test_vectorized_and_scalar_agree(listing):
    keys, hashes = listing
    sample = slice(0, 20_000)
    expected = np.array([chunk_of(k, 37) for k in keys[sample]])
    np.testing.assert_array_equal(jump_hash_array(hashes[sample], 37), expected)
    np.testing.assert_array_equal(assign_chunks(keys[:2_000], 37), expected[:2_000])


def test_adding_items_never_moves_existing_ones(listing):
    keys, hashes = listing
    n = n_chunks_for(N_ITEMS)
    assert n == 20
    before = jump_hash_array(hashes, n)
    # The source grows by 10% and the new listing comes back in another order.
    grown = keys + mimic_like_keys(N_ITEMS, N_ITEMS + 100_000)
    order = np.random.default_rng(0).permutation(len(grown))
    shuffled = [grown[i] for i in order]
    after = np.empty(len(grown), dtype=np.int64)
    after[order] = assign_chunks(shuffled, n)  # back in the original listing's order
    assert (after[:N_ITEMS] == before).all()
    assert set(np.unique(after[N_ITEMS:])) == set(range(n)), "new items spread over all chunks"


def test_chunks_are_balanced(listing):
    _, hashes = listing
    for n in (20, 64):
        sizes = np.bincount(jump_hash_array(hashes, n), minlength=n)
        assert sizes.sum() == N_ITEMS
        assert sizes.max() / sizes.min() < 1.1, (n, sizes.min(), sizes.max())


def test_growing_the_chunk_count_moves_only_the_share_of_the_new_chunks(listing):
    _, hashes = listing
    old, new = jump_hash_array(hashes, 20), jump_hash_array(hashes, 25)
    moved = old != new
    assert abs(moved.mean() - 5 / 25) < 0.005
    assert (new[moved] >= 20).all(), "an item may only move into a new chunk"


def test_plan_partitions_the_items_exactly():
    keys = mimic_like_keys(0, 5_000)
    plan = ChunkPlan("mimic_cxr", n_chunks=7)
    assert plan.chunk_ids() == ["000", "001", "002", "003", "004", "005", "006"]
    selected = [plan.select(keys, cid) for cid in plan.chunk_ids()]
    assert sorted(k for chunk in selected for k in chunk) == sorted(keys)
    assert sum(map(len, selected)) == len(keys)
    member = plan.member("003")
    assert [k for k in keys if member(k)] == selected[3]
    assert all(plan.chunk_id(k) == "003" for k in selected[3])
    assert ChunkPlan("big", n_chunks=2_000).chunk_ids()[-1] == "1999"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ChunkPlan("s", 0), "n_chunks must be >= 1"),
        (lambda: ChunkPlan("s", 4, method="md5-mod"), "unknown chunk method"),
        (lambda: ChunkPlan("s", 4).member("004"), "no chunk '004'"),
        (lambda: jump_hash(1, 0), "n_chunks must be >= 1"),
    ],
)
def test_invalid_plans_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
