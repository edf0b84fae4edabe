"""Streaming the mixture's Parquet shards into padded batches of one task family.

Why it is built this way:
- A family's samples form one endless stream: epoch 0's order, then epoch 1's, and so on,
  each epoch shuffling whole row groups, then rows inside each row group, so reading stays
  sequential per row group while batches still mix shards. Global micro-batch `b` is samples
  `[b * micro_batch, (b + 1) * micro_batch)` of that stream, and goes to DDP rank
  `b % world`. Nothing is dropped and nothing padded: an epoch ends after exactly the
  family's row count, wherever that falls (a micro-batch may straddle two epochs), so the
  samples each optimizer step sees and the epoch boundaries do not depend on the world size
  (nor, for a fixed global batch, on the micro-batch size). A non-repeating stream (one
  epoch, for evaluation) shares the remainder: its last micro-batch is short.
- Nothing depends on the number of DataLoader workers, so a run resumed with other
  `num_workers` sees the same data, and resuming is "skip the first j micro-batches of this
  rank", computed, not replayed. On one rank, the j-th micro-batch goes to worker
  `(j - start) % num_workers`, the order in which a DataLoader with `in_order=True` asks its
  workers, so workers decode images in parallel and the main process still receives the
  stream in order.
- Workers return finished, padded tensors (`batch_size=None`): image decoding and tokenizing
  happen in the workers, never in the training process.
- Only the row index (file, row group, row) of the family's samples is built up front, from
  the tiny `task_family` column; peak memory does not grow with the image data.
- Length-aware: given each row's token length, an epoch's order is cut into windows of
  `length_group` micro-batches, each window sorted by length and its micro-batches shuffled
  (`length_grouped`), so a micro-batch holds samples of similar length and little padding;
  only where the plain shuffle would pad more than `MIN_PADDING` of the positions, since
  grouping also makes a batch's samples alike in whatever correlates with length.
  It is still a permutation of the same epoch (every sample once per epoch, near the same
  point of it), computed from (seed, epoch) alone: world-size independent and resumable.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from healthgpt.data.shards import listed_shards, open_shard, resolve_images
from healthgpt.storage import output_path

SampleEncoder = Callable[[dict[str, Any]], dict[str, Any]]
Collator = Callable[[list[dict[str, Any]]], dict[str, Any]]
# Micro-batches sorted together by length: wide enough to find similar lengths, narrow enough
# that a window stays a short stretch of the epoch (and of its row groups).
LENGTH_GROUP = 64
# Grouping makes a micro-batch's samples alike (in length, and in whatever goes with length),
# so it is used only where the plain shuffle wastes more than this share of positions.
MIN_PADDING = 0.05


def split_files(subset_dir: Path, split: str) -> list[Path]:
    """`<subset>/data/<split>-NNNNN.parquet` as the mixture's manifest lists them (local or on
    an object store); a subset directory without a mixture manifest is listed instead."""
    return listed_shards(subset_dir, f"data/{split}-")


def hash_shards(digest: Any, files: Iterable[Path]) -> None:
    """Feed a list of shards' identity, their names and sizes (no data read), to `digest`."""
    for path in files:
        digest.update(f"{Path(str(path)).name}:{output_path(path).stat().st_size}".encode())


def shards_fingerprint(files: Iterable[Path]) -> str:
    """Identity of a list of shards from their names and sizes."""
    digest = hashlib.sha256()
    hash_shards(digest, files)
    return digest.hexdigest()


def length_grouped(
    order: np.ndarray,
    lengths: np.ndarray,
    micro_batch: int,
    group: int,
    rng: np.random.Generator,
    offset: int = 0,
) -> np.ndarray:
    """One epoch's `order` (positions) reordered so each micro-batch holds similar lengths.

    The first `offset` positions complete the micro-batch that straddles in from the previous
    epoch and stay as they are; the rest is cut into windows of `group` micro-batches, each
    sorted by length (ties keep the shuffled order) and its full micro-batches shuffled (a
    short last one stays last, so later micro-batches stay aligned). A permutation of `order`.
    """
    offset = min(offset, len(order))
    pieces = [order[:offset]]
    window = group * micro_batch
    for start in range(offset, len(order), window):
        piece = order[start : start + window]
        piece = piece[np.argsort(-lengths[piece], kind="stable")]
        full = len(piece) // micro_batch
        blocks = [piece[i * micro_batch : (i + 1) * micro_batch] for i in range(full)]
        pieces.extend(blocks[k] for k in rng.permutation(full))
        pieces.append(piece[full * micro_batch :])
    return np.concatenate(pieces) if pieces else order


def padding_fraction(lengths: np.ndarray, batches: Iterable[np.ndarray]) -> float:
    """Share of the padded positions of right-padded `batches` (position arrays) that are
    padding: 1 - tokens / (batch size x longest sample), summed over the batches."""
    tokens = positions = 0
    for batch in batches:
        if len(batch):
            tokens += int(lengths[batch].sum())
            positions += len(batch) * int(lengths[batch].max())
    return 1.0 - tokens / positions if positions else 0.0


@dataclass(frozen=True)
class RowIndex:
    """Where one family's rows are: parallel arrays of (file number, row group, row)."""

    files: tuple[str, ...]
    file: np.ndarray
    group: np.ndarray
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    def select(self, keep: np.ndarray) -> RowIndex:
        """The rows where boolean `keep` is true, in the same order."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self),):
            raise ValueError(f"mask of {keep.shape} for an index of {len(self)} rows")
        return RowIndex(self.files, self.file[keep], self.group[keep], self.row[keep])

    def row_groups(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(file number, row group, positions in this index) of each contiguous run."""
        if not len(self):
            return
        change = np.flatnonzero((np.diff(self.file) != 0) | (np.diff(self.group) != 0)) + 1
        for positions in np.split(np.arange(len(self)), change):
            first = positions[0]
            yield int(self.file[first]), int(self.group[first]), positions

    @classmethod
    def build(cls, files: list[Path], family: str | None = None, **equals: str) -> RowIndex:
        """Index the rows whose `task_family` is `family` (and whose columns match `equals`)."""
        columns = (["task_family"] if family else []) + list(equals)
        file_ids, groups, rows = [], [], []
        for number, path in enumerate(files):
            parquet = open_shard(path)
            for group in range(parquet.metadata.num_row_groups):
                n = parquet.metadata.row_group(group).num_rows
                keep = np.ones(n, dtype=bool)
                if columns:
                    table = parquet.read_row_group(group, columns=columns)
                    if family:
                        keep &= np.asarray(table["task_family"].to_pylist()) == family
                    for column, value in equals.items():
                        keep &= np.asarray(table[column].to_pylist()) == value
                selected = np.flatnonzero(keep)
                file_ids.append(np.full(len(selected), number, dtype=np.int32))
                groups.append(np.full(len(selected), group, dtype=np.int32))
                rows.append(selected.astype(np.int64))
        cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)  # noqa: E731
        return cls(
            tuple(str(f) for f in files),
            cat(file_ids, np.int32),
            cat(groups, np.int32),
            cat(rows, np.int64),
        )

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """Positions in this index in the order of `epoch`: row groups shuffled, rows inside."""
        rng = np.random.default_rng([seed, epoch])
        # The index is built file by file, row group by row group: each unit is a contiguous run.
        change = np.flatnonzero((np.diff(self.file) != 0) | (np.diff(self.group) != 0)) + 1
        units = np.split(np.arange(len(self)), change) if len(self) else []
        order = [rng.permutation(units[u]) for u in rng.permutation(len(units))]
        return np.concatenate(order) if order else np.zeros(0, dtype=np.int64)


def iter_rows(
    files: list[Path], columns: list[str], family: str | None = None
) -> Iterator[dict[str, Any]]:
    """Rows (only `columns`, which must include `task_family` when filtering) of `files`, one
    row group at a time, in shard order."""
    for path in files:
        parquet = open_shard(path)
        for group in range(parquet.metadata.num_row_groups):
            table = resolve_images(parquet.read_row_group(group, columns=columns), path)
            for row in table.to_pylist():
                if family is None or row["task_family"] == family:
                    yield row


@dataclass(frozen=True)
class StreamSpec:
    """Everything that decides which rows land in which micro-batch of which rank."""

    micro_batch: int
    seed: int = 0
    rank: int = 0
    world: int = 1
    shuffle: bool = True
    repeat: bool = True  # cycle epochs forever (training) or stop after one (evaluation)
    length_group: int = 0  # micro-batches sorted together by length (0: plain shuffle)


def batches_per_rank(n_rows: int, spec: StreamSpec) -> int:
    """Micro-batches rank `spec.rank` gets from one epoch of a non-repeating stream: the
    global micro-batches `b < ceil(n_rows / micro_batch)` with `b % world == rank`."""
    total = -(-n_rows // spec.micro_batch)
    return max(0, -(-(total - spec.rank) // spec.world))


def global_micro_batch(j: int, rank: int, world: int) -> int:
    """The global index of rank `rank`'s j-th micro-batch: the same samples at any world size
    (the loop derives the micro-batch's dropout seed from it)."""
    return j * world + rank


class ShardStream(IterableDataset):
    """Padded micro-batches of one family, from micro-batch `start` of this rank onwards.

    `lengths` (token length per index position) turns on length grouping when
    `spec.length_group` is set."""

    def __init__(
        self,
        index: RowIndex,
        spec: StreamSpec,
        encode: SampleEncoder,
        collate: Collator,
        columns: list[str] | None = None,
        start: int = 0,
        cache_row_groups: int = 2,
        lengths: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.index, self.spec, self.encode, self.collate = index, spec, encode, collate
        self.columns = columns
        self.start = start
        self.per_rank = batches_per_rank(len(index), spec)
        if not len(index):
            raise ValueError("no rows to stream")
        self.lengths = None
        if lengths is not None and spec.length_group and spec.shuffle:
            self.lengths = np.asarray(lengths, dtype=np.int64)
            if self.lengths.shape != (len(index),):
                raise ValueError(f"{self.lengths.shape} lengths for an index of {len(index)}")
            plain = padding_fraction(self.lengths, self._cut(index.epoch_order(spec.seed, 0)))
            if plain <= MIN_PADDING:
                self.lengths = None  # little to gain: keep the plain shuffle
        if self.lengths is not None:
            # A window reads the row groups it spans: keep them all cached while it is read.
            rows = [len(p) for _, _, p in index.row_groups()]
            window = spec.length_group * spec.micro_batch
            cache_row_groups = max(cache_row_groups, -(-window // int(np.median(rows))) + 2)
        self.cache_row_groups = cache_row_groups
        if not spec.repeat and self.per_rank == 0:
            raise ValueError(
                f"{len(index)} rows give rank {spec.rank} of {spec.world} no micro-batch"
            )

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        size = self.spec.micro_batch
        return [order[i : i + size] for i in range(0, len(order), size)]

    def _order(self, epoch: int) -> np.ndarray:
        if not self.spec.shuffle:
            return np.arange(len(self.index))
        order = self.index.epoch_order(self.spec.seed, epoch)
        if self.lengths is None:
            return order
        size = self.spec.micro_batch
        rng = np.random.default_rng([self.spec.seed, epoch, 1])
        offset = (-epoch * len(self.index)) % size  # completes the straddling micro-batch
        return length_grouped(order, self.lengths, size, self.spec.length_group, rng, offset)

    def micro_batch_rows(self, j: int, orders: dict[int, np.ndarray] | None = None) -> np.ndarray:
        """Index positions of this rank's j-th micro-batch (j counts across epochs)."""
        n, size = len(self.index), self.spec.micro_batch
        b = global_micro_batch(j, self.spec.rank, self.spec.world)
        first = b * size
        last = first + size if self.spec.repeat else min(first + size, n)
        orders = {} if orders is None else orders
        epochs = range(first // n, (max(last, first + 1) - 1) // n + 1)
        for stale in [e for e in orders if e not in epochs]:
            del orders[stale]
        for epoch in epochs:
            if epoch not in orders:
                orders[epoch] = self._order(epoch)
        stream = np.arange(first, last)
        if not len(stream):
            return stream
        epoch, offset = np.divmod(stream, n)
        return np.concatenate([orders[e][offset[epoch == e]] for e in epochs if (epoch == e).any()])

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0) if not self.spec.repeat else 2**62

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        stop = math.inf if self.spec.repeat else self.per_rank
        cache: OrderedDict[tuple[int, int], Any] = OrderedDict()
        # Each shard opened once per iterator: opening parses the footer (about 10 ms for a
        # shard of small row groups), and shuffled rows would reopen it for almost every row.
        shards: dict[int, Any] = {}
        orders: dict[int, np.ndarray] = {}
        j = self.start + worker
        while j < stop:
            positions = self.micro_batch_rows(j, orders)
            yield self.collate([self.encode(self._row(p, cache, shards)) for p in positions])
            j += workers

    def _row(self, position: int, cache: OrderedDict, shards: dict[int, Any]) -> dict[str, Any]:
        key = (int(self.index.file[position]), int(self.index.group[position]))
        if key not in cache:
            if key[0] not in shards:
                shards[key[0]] = open_shard(self.index.files[key[0]])
            table = shards[key[0]].read_row_group(key[1], columns=self.columns)
            cache[key] = resolve_images(table, self.index.files[key[0]])
            while len(cache) > self.cache_row_groups:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return cache[key].slice(int(self.index.row[position]), 1).to_pylist()[0]


def make_loader(stream: ShardStream, num_workers: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over already-batched items, with its own RNG so it never draws from (and
    shifts) the global torch RNG that dropout uses: resumed runs stay bit-identical.
    """
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
        generator=torch.Generator().manual_seed(0),
    )
