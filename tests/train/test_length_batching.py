"""Length-grouped micro-batches: the same samples per epoch as the plain shuffle, in the same
stretch of the epoch, world-size independent and resumable, with less padding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from healthgpt.train.data import (
    RowIndex,
    ShardStream,
    StreamSpec,
    length_grouped,
    padding_fraction,
)
from healthgpt.train.loop import Progress


def _index(n: int, group_rows: int = 7) -> RowIndex:
    """n rows in row groups of `group_rows` (one file), as RowIndex.build lays them out."""
    groups = np.arange(n) // group_rows
    rows = np.arange(n) % group_rows
    return RowIndex(("f",), np.zeros(n, np.int32), groups.astype(np.int32), rows)


def _stream(n: int, lengths, micro: int = 4, rank: int = 0, world: int = 1, group: int = 4):
    spec = StreamSpec(micro, seed=3, rank=rank, world=world, length_group=group)
    return ShardStream(_index(n), spec, lambda r: r, lambda b: b, lengths=lengths)


def _lengths(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 400, n)


@pytest.mark.parametrize("n", [61, 64])
def test_every_sample_as_often_as_with_the_plain_sampler(n: int):
    lengths = _lengths(n)
    grouped, plain = _stream(n, lengths), _stream(n, None)
    batches = n  # micro-batches of 4: exactly four epochs, straddling epoch ends when n is odd
    orders: dict = {}
    seen = Counter(int(p) for j in range(batches) for p in grouped.micro_batch_rows(j, orders))
    before = Counter(int(p) for j in range(batches) for p in plain.micro_batch_rows(j, {}))
    assert seen == before == Counter(dict.fromkeys(range(n), 4))
    for epoch in range(3):
        order = grouped._order(epoch)
        assert sorted(order.tolist()) == list(range(n))


def test_a_window_holds_the_plain_windows_samples_and_pads_less():
    n, micro, group = 256, 4, 8
    lengths = _lengths(n, 1)
    order = _index(n).epoch_order(3, 0)
    rng = np.random.default_rng(0)
    grouped = length_grouped(order, lengths, micro, group, rng)
    window = micro * group
    for start in range(0, n, window):  # locality: each window keeps its samples
        assert set(grouped[start : start + window]) == set(order[start : start + window])
    cut = lambda o: [o[i : i + micro] for i in range(0, n, micro)]  # noqa: E731
    before, after = padding_fraction(lengths, cut(order)), padding_fraction(lengths, cut(grouped))
    assert after < before / 3, (before, after)


def test_world_size_independent_and_resumable_mid_epoch():
    n = 50
    lengths = _lengths(n, 2)
    one = _stream(n, lengths)
    single = [one.micro_batch_rows(j).tolist() for j in range(30)]
    two = [_stream(n, lengths, rank=r, world=2) for r in range(2)]
    interleaved = [two[b % 2].micro_batch_rows(b // 2).tolist() for b in range(30)]
    assert interleaved == single
    resumed = _stream(n, lengths)  # a fresh process: nothing carried over but j
    assert [resumed.micro_batch_rows(j).tolist() for j in range(17, 30)] == single[17:30]


def test_offset_keeps_the_straddling_micro_batch_intact():
    order = np.arange(10)
    lengths = np.arange(10)[::-1].copy()
    out = length_grouped(order, lengths, 4, 2, np.random.default_rng(0), offset=3)
    # 0-2 finish the previous micro-batch; 3-9 are one window, longest first, its short
    # last micro-batch (7, 8, 9) kept last.
    assert out.tolist() == list(range(10))
    shuffled = length_grouped(order[::-1].copy(), lengths, 4, 2, np.random.default_rng(0), 3)
    assert shuffled[:3].tolist() == [9, 8, 7]
    assert shuffled[3:].tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_progress_reports_the_padding_fraction():
    progress = Progress(positions={"comprehension": [90, 100], "generation": [100, 100]})
    assert progress.padding_fraction("comprehension") == pytest.approx(0.1)
    assert progress.padding_fraction() == pytest.approx(0.05)
    assert Progress.from_json(progress.to_json()).positions == progress.positions


def test_plain_shuffle_kept_where_it_pads_little():
    n = 64
    alike = np.where(np.arange(n) % 2, 100, 98)  # two lengths that go with two answers
    assert _stream(n, alike).lengths is None
    plain = _stream(n, None)
    assert [_stream(n, alike).micro_batch_rows(j).tolist() for j in range(20)] == [
        plain.micro_batch_rows(j).tolist() for j in range(20)
    ]
    assert _stream(n, _lengths(n)).lengths is not None
