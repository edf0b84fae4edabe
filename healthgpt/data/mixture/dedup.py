"""Image identity for dedup and decontamination: exact content hashes and perceptual hashes.

- Identity (`healthgpt.data.decode.identity`): xxh3 of the decoded pixels, and a 64-bit DCT
  perceptual hash; ingestion stores both beside each image. For an image without a stored
  identity, each distinct PNG file is decoded once (a bounded cache keyed by the sha256 of
  its bytes).
- Near-duplicate: two images are near duplicates when their phashes differ in at most
  `threshold` bits. Robust to rescaling, brightness shifts and recompression.
- Scale: candidates come from LSH banding, never from all pairs. The 64 bits are cut into
  `threshold + 1` bands; by pigeonhole two hashes within `threshold` bits agree exactly on at
  least one band, so bucketing by band finds every near-duplicate pair (no false negatives)
  while comparing only pairs that share a bucket. Near-duplicates are direct neighbours
  (within the threshold), never chained transitively.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable

import imagehash
import numpy as np
import polars as pl
from PIL import Image

from healthgpt.data.decode.identity import ImageHash, hash_png


def phash64_reference(image: Image.Image) -> int:
    """`imagehash.phash` itself, which the tests hold `phash64` close to."""
    return int(str(imagehash.phash(image)), 16)


class ImageHasher:
    """`hash_png` with a bounded LRU cache keyed by the PNG bytes' sha256 (`digest`; callers
    that cache more than one hash per image key by a tuple holding it).

    VQA sources repeat one image across many questions; the cache makes each distinct file
    decode once while keeping memory bounded however large the input.
    """

    def __init__(self, max_entries: int = 16_384) -> None:
        self.max_entries = max_entries
        self._cache: OrderedDict[Hashable, ImageHash] = OrderedDict()
        self.decoded = 0

    @staticmethod
    def digest(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    def get(self, digest: Hashable) -> ImageHash | None:
        hit = self._cache.get(digest)
        if hit is not None:
            self._cache.move_to_end(digest)
        return hit

    def put(self, digest: Hashable, value: ImageHash) -> None:
        self._cache[digest] = value
        self._cache.move_to_end(digest)
        if len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def __call__(self, data: bytes) -> ImageHash:
        digest = self.digest(data)
        hit = self.get(digest)
        if hit is None:
            hit = hash_png(data)
            self.decoded += 1
            self.put(digest, hit)
        return hit


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _bands(threshold: int) -> list[tuple[int, int]]:
    """(shift, width) of `threshold + 1` bands covering the 64 bits as evenly as possible."""
    n = threshold + 1
    widths = [64 // n + (1 if i < 64 % n else 0) for i in range(n)]
    shifts = np.cumsum([0, *widths[:-1]]).tolist()
    return list(zip(shifts, widths, strict=True))


def _popcount(values: np.ndarray) -> np.ndarray:
    return np.bitwise_count(values)


def candidate_pairs(hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of `hashes` (unique uint64) within `threshold` bits, via LSH bands.

    Work is proportional to the number of pairs that share a band value, not to n^2: each
    band is sorted once and only neighbours inside equal-value runs are compared.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = hashes.size
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    if n < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    for shift, width in _bands(threshold):
        band = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(band, kind="stable")
        sorted_band = band[order]
        positions = np.arange(n - 1)
        offset = 1
        while positions.size:
            positions = positions[positions + offset < n]
            positions = positions[sorted_band[positions + offset] == sorted_band[positions]]
            if not positions.size:
                break
            i, j = order[positions], order[positions + offset]
            close = _popcount(hashes[i] ^ hashes[j]) <= threshold
            found_i.append(np.minimum(i[close], j[close]))
            found_j.append(np.maximum(i[close], j[close]))
            offset += 1
    if not found_i:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    pairs = np.unique(np.stack([np.concatenate(found_i), np.concatenate(found_j)]), axis=1)
    return pairs[0].astype(np.int64), pairs[1].astype(np.int64)


class PhashIndex:
    """A queryable LSH index over a fixed set of phashes (used to check a mixture for leaks)."""

    def __init__(self, hashes: list[int], threshold: int) -> None:
        self.threshold = threshold
        self.hashes = np.asarray(hashes, dtype=np.uint64)
        self._bands = _bands(threshold)
        self._buckets: list[dict[int, list[int]]] = [{} for _ in self._bands]
        for index, value in enumerate(hashes):
            for buckets, (shift, width) in zip(self._buckets, self._bands, strict=True):
                buckets.setdefault((value >> shift) & ((1 << width) - 1), []).append(index)

    def query(self, value: int) -> list[int]:
        """Indices of the stored hashes within `threshold` bits of `value`."""
        seen: set[int] = set()
        for buckets, (shift, width) in zip(self._buckets, self._bands, strict=True):
            for index in buckets.get((value >> shift) & ((1 << width) - 1), ()):
                if index not in seen and hamming(int(self.hashes[index]), value) <= self.threshold:
                    seen.add(index)
        return sorted(seen)


DUPLICATE_EXACT = "duplicate_exact"
DUPLICATE_NEAR = "near_duplicate"


def near_pairs(phashes: np.ndarray, threshold: int) -> pl.DataFrame:
    """(phash, near) for every ordered pair of distinct phashes within `threshold` bits, plus
    each phash with itself: the relation "is a near-duplicate of", ready to join on.

    Direct neighbours only, never the transitive closure: adjacent slices of a volume are
    often pairwise near-duplicates, and chaining them would merge a whole volume into one.
    """
    unique = np.unique(np.asarray(phashes, dtype=np.uint64))
    i, j = candidate_pairs(unique, threshold)
    a = np.concatenate([unique, unique[i], unique[j]])
    b = np.concatenate([unique, unique[j], unique[i]])
    return pl.DataFrame({"phash": a, "near": b}, schema={"phash": pl.UInt64, "near": pl.UInt64})


REMOVED_SCHEMA = {"seq": pl.UInt64, "reason": pl.String, "matched_seq": pl.UInt64}
"""Rows removed from the sample index: which sample, why, and the sample it matched."""


def repeated_rows(frame: pl.DataFrame, columns: list[str]) -> pl.Series:
    """Whether each row's values in `columns` occur in another row, as a cheap first cut.

    A 64-bit mix of the columns' physical values, then `np.unique`: about 30 bytes per row,
    where a polars struct hash takes several times that. A collision only keeps a row for
    the exact comparison that follows, so it never causes a wrong removal.
    """
    mixed = np.zeros(frame.height, dtype=np.uint64)
    for column in columns:
        values = frame[column].to_physical()
        if values.dtype.is_integer():
            values = values.cast(pl.UInt64).fill_null(np.uint64(2**64 - 1))
        else:  # a within-run hash is enough here (it only pre-filters)
            values = values.hash(seed=0)
        mixed = (mixed ^ values.to_numpy()) * np.uint64(0x9E3779B97F4A7C15)
        mixed ^= mixed >> np.uint64(29)
    _, inverse, counts = np.unique(mixed, return_inverse=True, return_counts=True)
    return pl.Series(counts[inverse] > 1)


def _exact_duplicates(train: pl.DataFrame) -> pl.DataFrame:
    by = ["task", "img_key", "tgt_key", "text_key"]
    # Cheap first cut (one hash per row), so the grouping below sees only repeated rows.
    train = train.filter(repeated_rows(train, by))
    first = train.group_by(by).agg(pl.col("seq").min().alias("matched_seq"))
    return (
        train.join(first, on=by, how="inner", nulls_equal=True)
        .filter(pl.col("seq") != pl.col("matched_seq"))
        .select("seq", pl.lit(DUPLICATE_EXACT).alias("reason"), "matched_seq")
        .sort("seq")
    )


def _near_candidates(train: pl.DataFrame, near: pl.DataFrame) -> pl.DataFrame:
    """(later seq, earlier seq) of same-task, same-text samples whose input images and
    target images are near-duplicates (or both absent)."""
    # Only samples whose input image has a distinct near neighbour, or whose (task, text,
    # input phash) repeats, can have a near-duplicate: keep the joins below small.
    linked = near.filter(pl.col("phash") != pl.col("near"))["phash"].unique()
    key = ["task", "text_key", "img_phash"]
    train = train.filter(pl.col("img_phash").is_in(linked.implode()) | repeated_rows(train, key))
    left = train.select("seq", "task", "text_key", "img_phash", "tgt_phash")
    right = train.select(
        pl.col("seq").alias("seq_r"),
        "task",
        "text_key",
        pl.col("img_phash").alias("img_r"),
        pl.col("tgt_phash").alias("tgt_r"),
    )
    # Input images: near-duplicates, or both absent (text_to_image).
    # (`near` is large: cut it to the rows that can match before joining.)
    near_input = near.filter(
        pl.col("phash").is_in(left["img_phash"].drop_nulls().unique().implode())
    )
    with_img = left.filter(pl.col("img_phash").is_not_null()).join(
        near_input.rename({"phash": "img_phash", "near": "img_r"}), on="img_phash"
    )
    without_img = left.filter(pl.col("img_phash").is_null()).with_columns(
        img_r=pl.lit(None, dtype=pl.UInt64)
    )
    candidates = (
        pl.concat([with_img, without_img])
        .join(right, on=["task", "text_key", "img_r"], how="inner", nulls_equal=True)
        .filter(pl.col("seq_r") < pl.col("seq"))
    )
    # Target images: near-duplicates, or both absent (comprehension).
    near_target = (
        near.filter(pl.col("phash").is_in(candidates["tgt_phash"].drop_nulls().unique().implode()))
        .rename({"phash": "tgt_phash", "near": "tgt_r"})
        .with_columns(ok=pl.lit(True))
    )
    candidates = candidates.join(near_target, on=["tgt_phash", "tgt_r"], how="left").filter(
        pl.col("ok").fill_null(False) | (pl.col("tgt_phash").is_null() & pl.col("tgt_r").is_null())
    )
    return candidates.select("seq", "seq_r").unique().sort("seq", "seq_r")


def find_duplicates(train: pl.DataFrame, near: pl.DataFrame) -> pl.DataFrame:
    """Training samples that repeat an earlier one (in `seq` order): same task, same text
    content (`text_key`), and the same images, exactly (`img_key`/`tgt_key`) or as direct
    near-duplicates (`img_phash`/`tgt_phash` pairs in `near`).

    Many questions about one image are not duplicates; the same question about the same (or a
    rescaled, re-windowed) image is. Near-duplicates are resolved greedily in `seq` order: a
    sample goes when an earlier *kept* sample is its near-duplicate. Returns REMOVED_SCHEMA
    rows.
    """
    exact = _exact_duplicates(train)
    rest = train.filter(~pl.col("seq").is_in(exact["seq"].implode())) if exact.height else train
    removed: dict[int, int] = {}
    for seq, earlier in _near_candidates(rest, near).iter_rows():
        if seq not in removed and earlier not in removed:
            removed[seq] = earlier
    near_rows = pl.DataFrame(
        {
            "seq": list(removed),
            "reason": [DUPLICATE_NEAR] * len(removed),
            "matched_seq": list(removed.values()),
        },
        schema=REMOVED_SCHEMA,
    )
    return pl.concat([exact, near_rows]).sort("seq")
