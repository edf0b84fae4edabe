"""Build the VL-Health mixture from ingested sources: tasks, dedup, decontamination, stages.

Three streaming passes over the ingested shards, so memory holds per-sample ids and hashes
but never the images of more than one batch:

1. answers: the closed answers per (source, question type), for single-choice options (text
   columns only).
2. index: plan every record's samples (`tasks.plan_record`), take the identities of the images
   they use (pixel hash and phash, stored by ingestion; an image without one is decoded
   and hashed here, once), keep a small per-sample index. A super-resolution input is
   decoded, degraded, hashed and encoded, and its PNG kept in a temporary images table for
   pass 3. Then, in memory on the index: near-duplicate
   pairs (LSH banding), decontamination against the evaluation splits, dedup, the seeded
   stage plans.
3. write: plan again (same function, same order: checked), render only the selected samples
   and write them with `ShardWriter` into the output layout. No image is decoded: images go
   once into `images/`, the samples hold references (`healthgpt.data.shards.resolve_images`
   puts the bytes back):

    <out>/images/data/images-NNNNN.parquet    every image the samples use, once, by sha256
    <out>/stage1/data/train-NNNNN.parquet     alignment (captions/descriptions, reconstruction)
    <out>/stage2/data/train-NNNNN.parquet     fusion set drawn from stage 1 ("Mixed-47k")
    <out>/stage3/data/train-NNNNN.parquet     instruction data (comprehension and generation)
    <out>/eval/data/{test,validation}-NNNNN.parquet   evaluation splits, incl. held-out pairs
    <out>/removed.parquet                     every dropped record / removed sample, with reason
    <out>/README.md, composition.png          dataset card
    <out>/_manifest.json                      shards, hashes, summary, config, plan (last)

Output order is the input order (sources by name, shards by name, rows as stored, a record's
tasks in a fixed order), so the same inputs and config give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from healthgpt.data.decode.identity import stored_identity
from healthgpt.data.ingest.run import read_ingested
from healthgpt.data.mixture import card as card_module
from healthgpt.data.mixture.config import (
    MixtureConfig,
    paper_preset,
    sample_preset,
)
from healthgpt.data.mixture.decontam import effective_split, find_contaminated
from healthgpt.data.mixture.dedup import REMOVED_SCHEMA as DEDUP_REMOVED
from healthgpt.data.mixture.dedup import ImageHasher, find_duplicates, near_pairs
from healthgpt.data.mixture.parallel import OrderedPool, hash_many
from healthgpt.data.mixture.pixels import HashJob, HashResult
from healthgpt.data.mixture.records import (
    SUBSETS,
    ColumnHashes,
    HashKey,
    IndexBatch,
    IngestedPart,
    IngestedSource,
    MixtureSummary,
    PlannedRecord,
    RenderBatch,
    RenderJob,
    SampleName,
)
from healthgpt.data.mixture.sampling import (
    GroupPlan,
    group_counts,
    plan_stage,
    plan_stage2,
    ranks,
    select,
)
from healthgpt.data.mixture.tasks import AnswerSets, TaskContext, plan_record, render_sample
from healthgpt.data.schema import HASH_COLUMNS, RECORD_SCHEMA, SAMPLE_SCHEMA, SPLITS, TASKS
from healthgpt.data.shards import (
    IMAGES_FOLDER,
    ImageStore,
    ImageTableWriter,
    ShardInfo,
    ShardWriter,
    open_shard,
    output_directory,
    shard_paths,
    write_manifest,
    write_table_file,
)
from healthgpt.data.tasks import STAGE1, STAGE2, STAGE3
from healthgpt.storage import is_local, output_path

__all__ = [
    "MixtureConfig",
    "MixtureSummary",
    "build_mixture",
    "paper_preset",
    "sample_preset",
    "SUBSETS",
]

DIMENSIONS = ("source", "task", "task_family", "modality", "split")
REMOVED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("task", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("matched_id", pa.string()),
    ],
    metadata={"healthgpt.schema": "removed/v1"},
)
"""Every record that yielded no sample and every sample removed by decontamination or dedup.

`matched_id` is the evaluation sample (decontamination) or the kept sample (dedup) matched.
"""
REMOVED_POLARS = {f.name: pl.String for f in REMOVED_SCHEMA}

ProgressFn = Callable[[str, int, int], None]
"""progress(phase, records done, records total); phases: answers, index, write."""


# --- input ---------------------------------------------------------------------------------


def read_inputs(ingested_dirs: dict[str, Path]) -> dict[str, IngestedSource]:
    """Each dataset's parts and shards, every manifest read once; an incomplete ingestion
    raises."""
    inputs = {}
    for name in sorted(ingested_dirs):
        parts = [
            IngestedPart(path, manifest) for path, manifest in read_ingested(ingested_dirs[name])
        ]
        shards = [path for part in parts for path in shard_paths(part.path, manifest=part.manifest)]
        inputs[name] = IngestedSource(name, parts, shards)
    return inputs


def input_files(ingested_dirs: dict[str, Path]) -> list[tuple[str, Path]]:
    """(dataset name, shard) in a fixed order; an incomplete ingestion raises."""
    return files_of(read_inputs(ingested_dirs))


def files_of(inputs: dict[str, IngestedSource]) -> list[tuple[str, Path]]:
    return [(name, path) for name in sorted(inputs) for path in inputs[name].shards]


def iter_records(
    files: list[tuple[str, Path]], columns: list[str], batch_rows: int
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for name, path in files:
        # No pre-buffering (it would load the whole file) and one thread: the reader then
        # holds about one row group at a time, whatever the shard size.
        parquet = open_shard(path)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(
            batch_size=batch_rows, columns=present, use_threads=False
        ):
            yield name, batch.to_pylist()


def count_records(files: list[tuple[str, Path]]) -> int:
    return sum(open_shard(path).metadata.num_rows for _, path in files)


class _Progress:
    def __init__(self, fn: ProgressFn | None, total: int, every_s: float = 5.0) -> None:
        self.fn, self.total, self.every_s = fn, total, every_s
        self.last = time.perf_counter()

    def __call__(self, phase: str, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if self.fn and (force or now - self.last >= self.every_s):
            self.fn(phase, done, self.total)
            self.last = now


# --- pass 2: index -------------------------------------------------------------------------


INDEX_SCHEMA = {
    "seq": pl.UInt64,
    "source": pl.Categorical,
    "split": pl.Enum(SPLITS),
    "task": pl.Enum(TASKS),
    "img_key": pl.UInt64,
    "tgt_key": pl.UInt64,
    "img_phash": pl.UInt64,
    "tgt_phash": pl.UInt64,
    "text_key": pl.UInt64,
    "question_key": pl.UInt64,  # VQA samples only: decontamination by question
    "rank1": pl.UInt64,
    "rank2": pl.UInt64,
    "rank3": pl.UInt64,
}
"""The in-memory sample index: about 90 bytes per candidate sample, nothing else grows with
the input. Samples are named by `seq` (their position in the input order); ids are looked
up again in the write pass for the few rows the removed table needs."""


@dataclass
class _Index:
    frames: list[pl.DataFrame] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0

    def compact(self) -> None:
        if len(self.frames) > 64:
            self.frames = [pl.concat(self.frames, rechunk=True)]


def _split_of(record: dict[str, Any], source: str, config: MixtureConfig) -> str:
    return effective_split(
        record,
        source,
        config.subject_split_sources,
        config.split_salt,
        config.generation_test_fraction,
    )


def _dropped_row(record: dict[str, Any], source: str, split: str, reason: str) -> dict:
    return {
        "id": record["id"],
        "record_id": record["id"],
        "source": source,
        "split": split,
        "task": None,
        "reason": reason,
        "matched_id": None,
    }


def _plan_batches(
    files: list[tuple[str, Path]], ctx: TaskContext, hasher: ImageHasher, index: _Index
) -> Iterator[tuple[IndexBatch, list[HashJob]]]:
    """Plan each batch's samples; yield it with the images whose hashes are not cached yet.

    Hashes are of what will be written: a super-resolution input is hashed as its degraded
    version. An image's own identity is read from the record when ingestion stored it; only
    images without one, and super-resolution inputs, go to the workers. Only plans and
    hashes travel on; the batch's image bytes are dropped here.
    """
    factor = ctx.config.sr_factor
    for source, records in iter_records(files, RECORD_SCHEMA.names, ctx.config.batch_rows):
        entries: list[PlannedRecord] = []
        pending: dict[tuple[bytes, int], bytes] = {}
        for record in records:
            split = _split_of(record, source, ctx.config)
            planned, reason = plan_record(record, source, split, ctx)
            if reason:
                index.dropped.append(_dropped_row(record, source, split, reason))
                continue
            needs: dict[str, int] = {}  # column -> degradation factor needed too (0: none)
            for sample in planned:
                if sample.input_col:
                    wanted = factor if sample.degrade else 0
                    needs[sample.input_col] = max(needs.get(sample.input_col, 0), wanted)
                if sample.output_col:
                    needs.setdefault(sample.output_col, 0)
            hashes: dict[str, ColumnHashes] = {}
            for column, need in sorted(needs.items()):
                data = record[column]["bytes"]
                stored = stored_identity(record.get(HASH_COLUMNS[column]), data)
                if stored is not None and not need:  # identity from ingestion: no decode
                    hashes[column] = ColumnHashes(b"", 0, stored, None)
                    continue
                digest = hasher.digest(data)
                original = stored or hasher.get(HashKey(digest))
                degraded = hasher.get(HashKey(digest, degraded=True)) if need else None
                cached = ColumnHashes(digest, need, original, degraded)
                if cached.pending:
                    pending.setdefault(cached.job_key, data)
                hashes[column] = cached
            entries.append(PlannedRecord(source, planned, hashes))
        jobs = [HashJob(png, factor) for (_, factor), png in pending.items()]
        yield IndexBatch(entries, list(pending), len(records)), jobs


def _index_entries(
    batch: IndexBatch,
    results: list[HashResult],
    ctx: TaskContext,
    hasher: ImageHasher,
    index: _Index,
    spill: ImageTableWriter,
) -> None:
    """Add the batch's samples to the index; keep the degraded PNGs the workers encoded in
    `spill` (keyed by the sha256 of the original) for the write pass."""
    fresh = dict(zip(batch.jobs, results, strict=True))
    for (digest, _), result in fresh.items():
        hasher.put(HashKey(digest), result.original)
        if result.degraded is not None:
            hasher.put(HashKey(digest, degraded=True), result.degraded)
            spill.put(digest.hex(), result.degraded_png)
    rows: dict[str, list[Any]] = {name: [] for name in INDEX_SCHEMA}
    for source, planned, hashes in batch.records:
        resolved: dict[str, HashResult] = {}
        for column, cached in hashes.items():
            if cached.pending:
                resolved[column] = fresh[cached.job_key]
            else:
                resolved[column] = HashResult(cached.original, cached.degraded)
        for sample in planned:
            image = target = None
            if sample.input_col:
                hashed = resolved[sample.input_col]
                image = hashed.degraded if sample.degrade else hashed.original
            if sample.output_col:
                target = resolved[sample.output_col].original
            values = (
                index.seq,
                source,
                sample.split,
                sample.task,
                image and image.key64,
                target and target.key64,
                image and image.phash,
                target and target.phash,
                sample.text_key,
                sample.question_key,
                *ranks(ctx.config.seed, sample.id),
            )
            for name, value in zip(INDEX_SCHEMA, values, strict=True):
                rows[name].append(value)
            index.seq += 1
    index.frames.append(pl.DataFrame(rows, schema=INDEX_SCHEMA))
    index.compact()


# --- selection -----------------------------------------------------------------------------


@dataclass
class _Selection:
    copies: dict[str, np.ndarray]  # subset -> copies per seq (eval: 0/1)
    named: np.ndarray  # seqs whose ids the removed table needs (removed or matched)
    plans: list[GroupPlan]
    available: dict[tuple[str, str], int]
    candidates: list[dict[str, Any]]  # candidate samples per (source, task, split)
    removed: pl.DataFrame
    not_selected: int


def _without(frame: pl.DataFrame, removed: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(~pl.col("seq").is_in(removed["seq"].implode())) if removed.height else frame


def _select(index: pl.DataFrame, config: MixtureConfig) -> _Selection:
    phashes = pl.concat([index["img_phash"], index["tgt_phash"]]).drop_nulls().to_numpy()
    near = near_pairs(phashes, config.near_dup_hamming)
    eval_splits = list(config.eval_splits)
    removed_parts = []
    train = index.filter(pl.col("split") == "train")
    if config.decontaminate:
        removed_parts.append(
            find_contaminated(index, near, eval_splits, config.decontaminate_by_question)
        )
        train = _without(train, removed_parts[-1])
    if config.dedup:
        removed_parts.append(find_duplicates(train, near))
        train = _without(train, removed_parts[-1])
    del near

    available = group_counts(train)
    stage1_plans = plan_stage(config, STAGE1, available)
    stage3_plans = plan_stage(config, STAGE3, available)
    stage1 = select(train, stage1_plans, "rank1")
    stage3 = select(train, stage3_plans, "rank3")
    stage1_frame = train.join(stage1.select("seq"), on="seq", how="semi")
    stage2_plans = plan_stage2(config.stage2_size, group_counts(stage1_frame))
    stage2 = select(stage1_frame, stage2_plans, "rank2")

    eval_names = [*eval_splits, *(["validation"] if config.include_validation else [])]
    evals = index.filter(
        pl.col("split").is_in(eval_names) & pl.col("task").is_in(config.eval_tasks)
    ).select("seq", pl.lit(1, dtype=pl.UInt32).alias("copies"))

    n = index.height
    copies = {}
    for subset, chosen in (
        (STAGE1, stage1),
        (STAGE2, stage2),
        (STAGE3, stage3),
        ("eval", evals),
    ):
        array = np.zeros(n, dtype=np.uint32)
        array[chosen["seq"].to_numpy()] = chosen["copies"].to_numpy()
        copies[subset] = array
    used = np.zeros(n, dtype=bool)
    for array in copies.values():
        used |= array > 0
    removed = (
        pl.concat(removed_parts) if removed_parts else pl.DataFrame(schema=DEDUP_REMOVED)
    ).join(index.select("seq", "source", "split", "task"), on="seq", how="left")
    named = np.zeros(n, dtype=bool)
    named[removed["seq"].to_numpy()] = True
    named[removed["matched_seq"].to_numpy()] = True
    return _Selection(
        copies=copies,
        named=named,
        plans=stage1_plans + stage2_plans + stage3_plans,
        available=available,
        candidates=index.group_by("source", "task", "split")
        .len()
        .with_columns(pl.col("source", "task", "split").cast(pl.String))
        .sort("source", "task", "split")
        .to_dicts(),
        removed=removed.with_columns(pl.col("source", "split", "task").cast(pl.String)),
        not_selected=int(n - used.sum() - removed.height),
    )


# --- pass 3: write -------------------------------------------------------------------------


class _Writers:
    """The sample shards of every (subset, split), and the images table they reference: an
    image is written once however many samples, tasks and subsets use it."""

    def __init__(self, root: Path, config: MixtureConfig) -> None:
        self.root, self.config = root, config
        self.writers: dict[tuple[str, str], ShardWriter] = {}
        self.images = ImageTableWriter(root, config.target_shard_bytes)
        self.counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))

    def stored(self, row: dict[str, Any]) -> dict[str, Any]:
        """`row` with its images in the images table and references in their place."""
        row["image"] = self.images.ref(row["image"])
        row["target_image"] = self.images.ref(row["target_image"])
        return row

    def write(self, subset: str, row: dict[str, Any]) -> None:
        key = (subset, row["split"])
        if key not in self.writers:
            self.writers[key] = ShardWriter(
                self.root / subset / "data",
                SAMPLE_SCHEMA,
                prefix=row["split"],
                target_shard_bytes=self.config.target_shard_bytes,
                row_group_bytes=self.config.row_group_bytes,
                hf_images=False,  # image columns hold references: see `resolve_images`
            )
        self.writers[key].write(row)
        for dim in DIMENSIONS:
            self.counts[subset][dim][row[dim]] += 1

    def close(self) -> tuple[dict[str, list[ShardInfo]], list[ShardInfo]]:
        shards: dict[str, list[ShardInfo]] = {}
        for subset, split in sorted(self.writers):
            for info in self.writers[(subset, split)].close():
                shards.setdefault(subset, []).append(info.under(f"{subset}/data"))
        return shards, self.images.close()

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        self.images.abort()


def _render_batches(
    files: list[tuple[str, Path]],
    ctx: TaskContext,
    selection: _Selection,
    rank1: np.ndarray,
    names: dict[int, SampleName],
) -> Iterator[RenderBatch]:
    """Plan each batch again (checked against pass 2); yield the selected samples. Fills
    `names` (seq -> sample id, record id) for the samples the removed table names."""
    seq = 0
    for source, records in iter_records(files, RECORD_SCHEMA.names, ctx.config.batch_rows):
        jobs: list[RenderJob] = []
        for record in records:
            split = _split_of(record, source, ctx.config)
            planned, reason = plan_record(record, source, split, ctx)
            if reason:
                continue
            for sample in planned:
                if ranks(ctx.config.seed, sample.id)[0] != int(rank1[seq]):
                    raise AssertionError(f"plan changed between passes at {seq}: {sample.id}")
                if selection.named[seq]:
                    names[seq] = SampleName(sample.id, record["id"])
                copies = {s: int(selection.copies[s][seq]) for s in SUBSETS}
                seq += 1
                if any(copies.values()):
                    jobs.append(RenderJob(record, sample, copies))
        yield RenderBatch(source, jobs, len(records))


def _write_jobs(
    batch: RenderBatch, degraded: ImageStore, ctx: TaskContext, writers: _Writers
) -> None:
    """Render and write the batch's samples. A super-resolution input comes from the PNGs
    pass 2 encoded when it hashed them (`degraded`, keyed by the sha256 of the original), so
    no image is decoded again here."""
    source = batch.source
    for record, sample, copies in batch.jobs:
        png = None
        if sample.degrade:
            png = degraded.get(hashlib.sha256(record[sample.input_col]["bytes"]).hexdigest())
        row = render_sample(record, sample, source, ctx, png)
        row = writers.stored(row)
        for subset in SUBSETS:
            for copy in range(copies[subset]):
                writers.write(subset, row if copy == 0 else {**row, "id": f"{row['id']}-r{copy}"})


# --- top level -----------------------------------------------------------------------------


def build_mixture(
    ingested_dirs: dict[str, Path],
    out: Path,
    config: MixtureConfig,
    progress: ProgressFn | None = None,
) -> MixtureSummary:
    """Build the mixture from `{dataset name: ingested directory}` into `out` (atomically).

    The dataset name is the sample's `source` (normally the reader's source name; two
    `llava_json` ingestions can be told apart by name). Returns the summary the pipeline
    turns into asset metadata.
    """
    started = time.perf_counter()
    config.validate()
    out = output_path(out)
    inputs = read_inputs(ingested_dirs)
    files = files_of(inputs)
    tick = _Progress(progress, count_records(files))
    answers = AnswerSets()
    done = 0
    text_columns = ["id", "kind", "split", "answer", "answer_type", "meta"]
    for source, records in iter_records(files, text_columns, 4096):
        for record in records:
            answers.add(record, source)
        done += len(records)
        tick("answers", done)
    ctx = TaskContext(config, answers)

    index, hasher, done, decoded = _Index(), ImageHasher(), 0, 0
    with tempfile.TemporaryDirectory(prefix="healthgpt-mixture-") as tmp:
        spill = ImageTableWriter(Path(tmp))
        try:
            with OrderedPool(config.workers) as pool:
                batches = _plan_batches(files, ctx, hasher, index)
                for batch, results in pool.map(hash_many, batches):
                    _index_entries(batch, results, ctx, hasher, index, spill)
                    decoded += len(results)
                    done += batch.n_records
                    tick("index", done)
            spill.close()
        except BaseException:
            spill.abort()
            raise
        frame = (
            pl.concat(index.frames, rechunk=True)
            if index.frames
            else pl.DataFrame(schema=INDEX_SCHEMA)
        )
        index.frames = []
        selection = _select(frame, config)
        rank1 = frame["rank1"].to_numpy()
        summary = MixtureSummary(
            out=str(out), records=done, candidates=frame.height, images_decoded=decoded
        )
        del frame

        degraded = ImageStore(tmp)
        with output_directory(out) as staging:
            writers, done = _Writers(staging, config), 0
            try:
                names: dict[int, SampleName] = {}
                for batch in _render_batches(files, ctx, selection, rank1, names):
                    _write_jobs(batch, degraded, ctx, writers)
                    done += batch.n_records
                    tick("write", done)
                summary.shards, summary.images = writers.close()
            except BaseException:
                writers.abort()
                raise
            removed = _removed_table(selection.removed, index.dropped, names)
            _finish(staging, summary, selection, removed, writers, config, inputs)
    summary.seconds = time.perf_counter() - started
    tick("write", done, force=True)
    return summary


def _removed_table(
    removed: pl.DataFrame, dropped: list[dict[str, Any]], names: dict[int, SampleName]
) -> pl.DataFrame:
    """REMOVED_SCHEMA rows: dropped records, then removed samples named by their ids."""
    ids = {seq: name.sample_id for seq, name in names.items()}
    record_ids = {seq: name.record_id for seq, name in names.items()}
    named = removed.with_columns(
        id=pl.col("seq").replace_strict(ids, return_dtype=pl.String),
        record_id=pl.col("seq").replace_strict(record_ids, return_dtype=pl.String),
        matched_id=pl.col("matched_seq").replace_strict(ids, return_dtype=pl.String),
    )
    # With nothing removed, replace_strict keeps the (empty) UInt64 seq column: cast, so the
    # empty frame still concatenates with the string-typed dropped records.
    named = named.select(REMOVED_SCHEMA.names).cast(REMOVED_POLARS)
    return pl.concat([pl.DataFrame(dropped, schema=REMOVED_POLARS), named]).sort("reason", "id")


def _finish(
    staging: Path,
    summary: MixtureSummary,
    selection: _Selection,
    removed: pl.DataFrame,
    writers: _Writers,
    config: MixtureConfig,
    inputs: dict[str, IngestedSource],
) -> None:
    summary.counts = {
        subset: {dim: dict(sorted(writers.counts[subset][dim].items())) for dim in DIMENSIONS}
        for subset in SUBSETS
    }
    summary.removed = dict(Counter(removed["reason"].to_list()))
    summary.not_selected = selection.not_selected
    summary.plan = [p.to_dict() for p in selection.plans]
    write_table_file(staging / "removed.parquet", removed.to_arrow().cast(REMOVED_SCHEMA))
    summary.licenses = card_module.read_licenses(
        inputs, card_module.manifests_dir(config.manifests_dir)
    )
    (staging / "composition.png").write_bytes(card_module.composition_chart_png(summary))
    (staging / "README.md").write_text(card_module.render_card(summary, config))
    all_shards = [
        *(info for subset in SUBSETS for info in summary.shards.get(subset, [])),
        *summary.images,
    ]
    out = output_path(summary.out)
    summary.paths = {"root": summary.out, "manifest": str(out / "_manifest.json")}
    if is_local(out):  # on an object store the files sit under a version prefix: use the manifest
        summary.paths.update(
            {s: str(out / s / "data") for s in SUBSETS if s in summary.shards},
            images=str(out / IMAGES_FOLDER / "data"),
            removed=str(out / "removed.parquet"),
            card=str(out / "README.md"),
            chart=str(out / "composition.png"),
        )
    write_manifest(
        staging,
        all_shards,
        summary=summary.to_json(),
        plan=summary.plan,
        available=[
            {"source": s, "task": t, "train_samples": n}
            for (s, t), n in sorted(selection.available.items())
        ],
        candidates=selection.candidates,
        removed_by_task=removed.group_by("task", "reason")
        .len()
        .drop_nulls("task")
        .sort("task", "reason")
        .to_dicts(),
        config=config.to_dict(),
    )
