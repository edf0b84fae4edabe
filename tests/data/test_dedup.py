"""Exact and near-duplicate detection: hashes, LSH candidates, and the mixture's removals."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest

from healthgpt.data.decode.identity import phash64
from healthgpt.data.mixture.dedup import (
    DUPLICATE_EXACT,
    DUPLICATE_NEAR,
    ImageHasher,
    PhashIndex,
    candidate_pairs,
    find_duplicates,
    hamming,
    hash_png,
    near_pairs,
    phash64_reference,
)
from tests.data.mixture_helpers import near_copy, png, reencoded, shared_build


def test_exact_key_is_of_pixels_so_reencoded_copies_match():
    original = png(1)
    copy = reencoded(original)
    assert copy != original
    assert hash_png(copy).key == hash_png(original).key
    assert hash_png(png(2)).key != hash_png(original).key


def test_rescaled_brightened_copy_is_a_near_duplicate_and_other_images_are_not():
    a, near, other = hash_png(png(3)), hash_png(near_copy(3)), hash_png(png(4))
    assert a.key != near.key
    assert hamming(a.phash, near.phash) <= 4
    assert hamming(a.phash, other.phash) > 10


def test_fast_phash_stays_within_a_bit_of_imagehash():
    """The box-filtered phash is imagehash's up to the downsampling filter: on smooth fields,
    their rescaled copies and flat images, it differs by a fraction of a bit on average."""
    from PIL import Image

    images = [Image.open(io.BytesIO(png(i))) for i in range(40)]
    images += [Image.open(io.BytesIO(near_copy(i, size=96))) for i in range(20)]
    images += [Image.open(io.BytesIO(png(i, size=256))) for i in range(40, 60)]
    images += [Image.new("L", (32, 32), 7), Image.new("RGB", (50, 70), (10, 200, 30))]
    distances = [hamming(phash64(i), phash64_reference(i)) for i in images]
    assert np.mean(distances) <= 0.5 and max(distances) <= 3, distances


def test_super_resolution_inputs_are_hashed_as_written():
    """The index hashes the degraded input the mixture will write, and encodes it once, from
    one decode."""
    from healthgpt.data.mixture.parallel import hash_many
    from healthgpt.data.mixture.tasks import degrade

    data = png(7)
    (original, degraded, written), (alone, none, unwritten) = hash_many([(data, 4), (data, 0)])
    assert original == alone == hash_png(data) and none is None and unwritten is None
    assert written == degrade(data, 4) and degraded == hash_png(written)


def test_hasher_decodes_each_distinct_file_once():
    hasher = ImageHasher(max_entries=4)
    data = png(5)
    assert hasher(data) == hasher(data) == hash_png(data)
    assert hasher.decoded == 1


@pytest.fixture(scope="module")
def standard_build(tmp_path_factory):
    return shared_build(tmp_path_factory)


def brute_force(hashes: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    pairs = set()
    for i in range(hashes.size):
        close = np.nonzero(np.bitwise_count(hashes[i] ^ hashes[i + 1 :]) <= threshold)[0]
        pairs |= {(i, i + 1 + int(j)) for j in close}
    return pairs


@pytest.mark.parametrize("threshold", [1, 3, 6])
def test_lsh_candidates_find_exactly_the_brute_force_pairs(threshold):
    rng = np.random.default_rng(threshold)
    centres = rng.integers(0, 2**63, 40, dtype=np.uint64) * np.uint64(2)
    flips = rng.integers(0, 64, (40, 12, 3))
    hashes = [
        int(c) ^ sum(1 << int(b) for b in bits[: rng.integers(0, 4)])
        for c, row in zip(centres, flips, strict=True)
        for bits in row
    ]
    unique = np.unique(np.array(hashes, dtype=np.uint64))
    i, j = candidate_pairs(unique, threshold)
    expected = brute_force(unique, threshold)
    assert expected and set(zip(i.tolist(), j.tolist(), strict=True)) == expected


def test_lsh_does_not_compare_all_pairs():
    """Uniform random hashes share few band values: candidates stay far below n^2 / 2."""
    hashes = np.unique(np.random.default_rng(0).integers(0, 2**63, 20_000, dtype=np.uint64))
    i, _ = candidate_pairs(hashes, 4)
    assert i.size == 0  # random 64-bit hashes are never within 4 bits


def test_phash_index_query():
    base = int(hash_png(png(6)).phash)
    index = PhashIndex([base, base ^ 0b111, base ^ ((1 << 40) - 1)], threshold=4)
    assert index.query(base ^ 0b1) == [0, 1]


def frame(rows):
    columns = ["seq", "task", "img_key", "tgt_key", "img_phash", "tgt_phash", "text_key"]
    return pl.DataFrame(
        [dict(zip(columns, row, strict=True)) for row in rows],
        schema={
            "seq": pl.UInt64,
            "task": pl.String,
            "img_key": pl.UInt64,
            "tgt_key": pl.UInt64,
            "img_phash": pl.UInt64,
            "tgt_phash": pl.UInt64,
            "text_key": pl.UInt64,
        },
    )


def removed_by_seq(removed: pl.DataFrame) -> dict[int, tuple[str, int]]:
    return {r["seq"]: (r["reason"], r["matched_seq"]) for r in removed.iter_rows(named=True)}


def test_find_duplicates_keeps_the_first_and_needs_same_task_and_text():
    train = frame(
        [
            (0, "vqa_open", 1, None, 100, None, 11),
            (1, "vqa_open", 1, None, 100, None, 11),  # exact duplicate of 0
            (2, "vqa_open", 1, None, 100, None, 12),  # another question: kept
            (3, "vqa_open", 2, None, 101, None, 11),  # near-duplicate image of 0
            (4, "reconstruction", 2, 2, 101, 101, 0),  # another task: kept
            (5, "reconstruction", 3, 3, 1 << 40, 1 << 40, 0),  # far: kept
        ]
    )
    removed = find_duplicates(train, near_pairs(train["img_phash"].drop_nulls().to_numpy(), 4))
    assert removed_by_seq(removed) == {1: (DUPLICATE_EXACT, 0), 3: (DUPLICATE_NEAR, 0)}


def test_near_duplicates_are_not_chained():
    """0~1 and 1~2 but not 0~2: 1 goes (near 0), 2 stays (its only match, 1, is gone)."""
    a, b, c = 0, 0b1111, 0b11111111
    train = frame(
        [
            (0, "super_resolution", 1, 1, a, a, 0),
            (1, "super_resolution", 2, 2, b, b, 0),
            (2, "super_resolution", 3, 3, c, c, 0),
        ]
    )
    removed = find_duplicates(train, near_pairs(np.array([a, b, c], dtype=np.uint64), 4))
    assert removed["seq"].to_list() == [1]


def test_generation_pairs_need_both_images_near():
    train = frame(
        [
            (0, "mri_to_ct", 1, 11, 0, 1 << 50, 0),
            (1, "mri_to_ct", 2, 12, 1, (1 << 50) | 1, 0),  # both near: duplicate
            (2, "mri_to_ct", 3, 13, 2, (1 << 30) - 1, 0),  # same input, far target
        ]
    )
    phashes = pl.concat([train["img_phash"], train["tgt_phash"]]).to_numpy()
    removed = find_duplicates(train, near_pairs(phashes, 4))
    assert removed["seq"].to_list() == [1]


def test_mixture_removes_planted_duplicates_within_and_across_sources(standard_build):
    removed = standard_build.removed_table
    exact = removed.filter(pl.col("reason") == DUPLICATE_EXACT)
    near = removed.filter(pl.col("reason") == DUPLICATE_NEAR)
    # VQA-RAD q5 repeats q4 (re-encoded image); SLAKE s5 asks q4 again on a rescaled copy.
    assert exact["source"].to_list() == ["vqa_rad"]
    assert near.height == 1
    kept = standard_build.rows("stage3")
    questions = [
        r["conversations"][0]["value"]
        for r in kept
        if "Is there a mass?" in r["conversations"][0]["value"]
    ]
    assert len(questions) == 1
