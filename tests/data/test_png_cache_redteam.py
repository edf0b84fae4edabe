"""Red-team tests for PngCache's counted uses and PathVQA's encode-ahead.

The promise: bounded memory, an image held only until its last use, and no image encoded
more often than the plain LRU cache before it (d2290da) encoded it. The first version
broke it three ways (encoding ahead did not refresh a held image, so a batch could evict its own
image; uses were counted by name while the cache keys by file; an evicted image was
counted again with all its uses); the tests below pin the fixes and what held.
"""

from __future__ import annotations

import functools
import pickle
import random
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from healthgpt.data.sources import pathvqa as reader_module
from healthgpt.data.sources.pathvqa import BATCH_ROWS, PathVqaReader
from healthgpt.data.sources.png_cache import PngCache
from tests.data.outputs import run

# ----------------------------------------------------------------------------- helpers


def counting_cache(max_items: int, uses: Counter | None = None) -> tuple[PngCache, Counter]:
    encoded: Counter = Counter()

    def encode(key):
        encoded[key] += 1
        return f"png of {key}".encode()

    return PngCache(encode, max_items=max_items, uses=uses), encoded


def reader_protocol(
    names: list[str], max_items: int, batch: int = BATCH_ROWS
) -> tuple[PngCache, Counter]:
    """What PathVQA's pickle reader does with its cache: every row's image counted, then per
    batch of rows, fetch each distinct image, then one get per row. After every batch the
    bound holds and no image is held after its last use."""
    cache, encoded = counting_cache(max_items, Counter(names))
    for start in range(0, len(names), batch):
        rows = names[start : start + batch]
        for name in dict.fromkeys(rows):
            cache.fetch(name)
        for name in rows:
            cache.get(name)
        assert len(cache._items) <= cache.max_items
        assert all(cache.uses[key] > 0 for key in cache._items)
    return cache, encoded


def old_lru_encodes(names: list[str], max_items: int, batch: int = BATCH_ROWS) -> int:
    """Encodes of d2290da's protocol: a plain LRU, `get` for each distinct image of a batch,
    then `get` per row."""
    items: OrderedDict = OrderedDict()
    encodes = 0

    def get(key):
        nonlocal encodes
        if key in items:
            items.move_to_end(key)
            return
        encodes += 1
        items[key] = True
        if len(items) > max_items:
            items.popitem(last=False)

    for start in range(0, len(names), batch):
        rows = names[start : start + batch]
        for name in dict.fromkeys(rows):
            get(name)
        for name in rows:
            get(name)
    return encodes


def write_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=85)


def pkl_source(root: Path, rows: list, images: dict[str, int]) -> Path:
    folder = root / "pvqa" / "images" / "train"
    for name, seed in images.items():
        write_jpeg(folder / name, seed)
    qa = root / "pvqa" / "qas" / "train" / "train_qa.pkl"
    qa.parent.mkdir(parents=True, exist_ok=True)
    qa.write_bytes(pickle.dumps(rows, protocol=4))
    return root


def row(image, index: int) -> dict:
    return {"image": image, "question": f"What is shown {index}?", "answer": "gland"}


@pytest.fixture
def encodes(monkeypatch) -> Counter:
    """Encodes of each image file by the PathVQA reader, by resolved path."""
    counted: Counter = Counter()
    encode = PathVqaReader._encode_file

    def recording(self, path):
        counted[str(path)] += 1
        return encode(self, path)

    monkeypatch.setattr(PathVqaReader, "_encode_file", recording)
    return counted


# ------------------------------------------------------- findings of the first version


def test_a_batch_does_not_evict_its_own_image_while_fetching_the_rest():
    """The batch [a, c] fits in a 2-item cache: fetching c must evict b, not a (held,
    counted, least recent unless fetching it refreshed it), or a is encoded again for its
    own row. The old encode-ahead `get(a)` moved a to the end first."""
    cache, encoded = counting_cache(max_items=2, uses=Counter(a=2, b=2, c=1))
    cache.fetch("a"), cache.fetch("b")  # batch 1: a, b
    cache.get("a"), cache.get("b")
    cache.fetch("a"), cache.fetch("c")  # batch 2: a (its 2nd use), c
    cache.get("a"), cache.get("c")
    assert encoded["a"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_reader_protocol_never_encodes_more_than_the_old_lru(seed):
    """Rows in random order over more images than the cache holds (as a shuffled pickle over
    > 256 images does at max_items=256): 20-30% more encodes than d2290da's LRU here."""
    rng = random.Random(seed)
    names = [f"i{rng.randrange(40)}" for _ in range(600)]
    _, encoded = reader_protocol(names, max_items=20)
    assert sum(encoded.values()) <= old_lru_encodes(names, max_items=20)


def test_spellings_of_one_image_file_encode_it_once(tmp_path, encodes):
    """`x`, `x.jpg`, `./x`, `././x.jpg`... name one file, one cache key (the resolved path),
    and were counted apart: the key was dropped after one spelling's count of gets and
    encoded again in the next batch, once per batch of 16 rows, where d2290da encoded it
    once."""
    rows = [row("./" * (i // 2) + "x" + (".jpg" if i % 2 else ""), i) for i in range(160)]
    root = pkl_source(tmp_path / "src", rows, {"x.jpg": 1})
    summary = run("pathvqa", root, tmp_path / "out")
    assert summary.records == 160
    assert sum(encodes.values()) == 1, encodes


def test_the_reader_under_cache_pressure_encodes_no_more_than_the_old_lru(
    tmp_path, encodes, monkeypatch
):
    """The same through `ingest`, with the reader's cache bound at 16 (instead of 256, to
    keep the source at 24 tiny images): every image exists and decodes, so d2290da's
    encodes are exactly `old_lru_encodes` of the row names."""
    monkeypatch.setattr(reader_module, "PngCache", functools.partial(PngCache, max_items=16))
    rng = random.Random(0)
    names = [f"i{rng.randrange(24)}" for _ in range(320)]
    rows = [row(name, i) for i, name in enumerate(names)]
    root = pkl_source(tmp_path / "src", rows, {f"i{k}.jpg": k for k in range(24)})
    summary = run("pathvqa", root, tmp_path / "out")
    assert summary.records == 320
    assert sum(encodes.values()) <= old_lru_encodes(names, max_items=16)


def test_no_image_is_held_after_its_last_use_even_after_an_eviction():
    """An image evicted before all its uses came is counted again, in its next batch, with
    its *total* uses: the count never reaches zero, the image is held after its last
    question (until the LRU bound pushes it out), against the class docstring."""
    cache, encoded = reader_protocol(["a", "b", "a"], max_items=1, batch=1)
    assert not cache._items and not cache.uses and encoded["a"] == 2


# --------------------------------------------------------------------------- held


@pytest.mark.parametrize("seed", range(5))
def test_the_bound_and_count_invariants_hold_for_random_protocols(seed):
    rng = random.Random(seed)
    names = [f"i{rng.randrange(rng.choice([3, 30, 300]))}" for _ in range(2000)]
    cache, _ = reader_protocol(names, max_items=rng.choice([1, 2, 16, 256]))  # asserts both
    assert not cache._items and not cache.uses


def test_grouped_rows_encode_each_image_once_and_hold_nothing_at_the_end():
    names = [f"i{k}" for k in range(500) for _ in range(k % 7 + 1)]
    cache, encoded = reader_protocol(names, max_items=256)
    assert set(encoded.values()) == {1} and not cache._items and not cache.uses


def test_one_image_asked_thousands_of_times_among_distinct_ones_is_encoded_once(tmp_path, encodes):
    names = [
        "hot" if i % 30 == 0 else f"r{(i // 500) % 5}" if i % 500 == 0 else f"missing{i}"
        for i in range(6000)
    ]  # a missing image: the row is quarantined
    rows = [row(name, i) for i, name in enumerate(names)]
    images = {"hot.jpg": 1} | {f"r{k}.jpg": 10 + k for k in range(5)}
    root = pkl_source(tmp_path / "src", rows, images)
    summary = run("pathvqa", root, tmp_path / "out")  # asserts the counts reconcile
    assert summary.items == 6000
    assert summary.records == sum(not name.startswith("missing") for name in names)
    assert encodes[str((root / "pvqa/images/train/hot.jpg").resolve())] == 1
    assert set(encodes.values()) == {1}


def test_hostile_rows_are_accepted_or_quarantined_in_every_chunk(tmp_path, encodes):
    """Odd image values, non-dict rows, missing/empty/truncated files, a link out of the
    root: every row accepted or quarantined, in a whole run and in 3 chunks; a truncated
    image is tried at most twice per row (the batch's fetch, the row's own get)."""
    outside = tmp_path / "outside.jpg"
    write_jpeg(outside, 9)
    values = ["x", " x ", 5, None, [1, 2], b"x", "h" * 100_000, 1.0, True, {"a": 1}, "",
              "missing", "trunc", "empty", "esc", "d", "../val/v", "/etc/passwd", "x\x00",
              "..", ".", "x/", " ", 0, []]  # fmt: skip
    rows = [row(v, i) for i, v in enumerate(values * 3)]
    rows[3:3] = ["not a dict", 7, None, [1, 2, 3], {"question": "q?", "answer": "a"}]
    root = pkl_source(tmp_path / "src", rows, {"x.jpg": 1, "5.jpg": 5, "True.jpg": 7})
    folder = root / "pvqa" / "images" / "train"
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "trunc.jpg").write_bytes((folder / "x.jpg").read_bytes()[:300])
    (folder / "esc.jpg").symlink_to(outside)
    (folder / "d.jpg").mkdir()
    whole = run("pathvqa", root, tmp_path / "whole")
    assert whole.items == len(rows)
    total = 0
    for index in range(3):
        total += run("pathvqa", root, tmp_path / f"c{index}", chunk=(index, 3)).items
    assert total == len(rows)
    assert str(outside.resolve()) not in encodes
