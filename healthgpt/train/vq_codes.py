"""The VQ codes of every generation target image, computed once per mixture, tokenizer and
preprocessing.

Why it exists: a generation sample's answer is the VQ code text of its target image, and
encoding those images at every stage start (on every rank) repeats the same work three times
per run. This module encodes each distinct image once (keyed by its content sha256) into a
store beside the mixture, and every stage and rank reads the codes from there.

Layout (a local directory beside a local mixture; a mixture on an object store gets no store
and its stages encode at start), written with the project's shard writer and atomic helpers::

    <mixture>/../vq_codes/<tokenizer sha256[:16]>-<vq_preprocess>/
        chunk-<key>-00000.parquet        image_sha256, codes (flat int32), grid; written one
                                         chunk at a time, so a crash keeps finished chunks
        index-<subset>-<fp>-00000.parquet   id -> image_sha256 of the subset's generation rows
        <subset>-<fp>.json               written last: the subset is complete; its data version
                                         and the chunks that hold its images

`<vq_preprocess>` is how an image is resized to the VQ resolution (`ModelConfig.vq_preprocess`:
"stretch" for the presets of the released weights, as the official code made their targets;
"pad" to square for the presets trained here): the same image has other codes under each, so
codes made one way are never read for the other. `<fp>` is the subset's shard fingerprint
(`data.shards_fingerprint`), which a stage computes without reading any image. The data
version hashes the tokenizer's sha256, the preprocessing and the sorted image hashes only, so
it changes when the mixture's images, the tokenizer or the preprocessing change and not when
a caption, a split of text rows or anything else does. Chunks are content-keyed, so a
new mixture version encodes only the images no earlier version had.

Parallel: under torchrun every rank plans the same chunks and encodes chunk `k` where
`k % world == rank` on its own device; rank 0 writes the indexes after a barrier.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from healthgpt.data.shards import ShardWriter, open_shard, resolve_images
from healthgpt.data.tasks import STAGES
from healthgpt.model import GENERATION, PRESETS, get_preset
from healthgpt.model.vq import VQ_PREPROCESS
from healthgpt.storage import is_local, output_path, write_json
from healthgpt.train import distributed
from healthgpt.train.data import RowIndex, shards_fingerprint, split_files
from healthgpt.train.model_api import (
    TARGET_COLUMNS,
    encode_images,
    image_sha256,
    load_vq_tokenizer,
    target_image_bytes,
)

STORE = "vq_codes"
SUBSETS = STAGES
SPLITS = ("train", "test")
CHUNK_IMAGES = 256  # images per chunk file: what a crash can lose at most
ENCODE_BATCH = 32
CODES_SCHEMA = pa.schema(
    [("image_sha256", pa.string()), ("codes", pa.list_(pa.int32())), ("grid", pa.int32())]
)
INDEX_SCHEMA = pa.schema([("id", pa.string()), ("image_sha256", pa.string())])

Log = Callable[[str], None]


def store_dir(mixture_dir: str | Path, tokenizer_sha256: str, vq_preprocess: str) -> Path:
    """Where one tokenizer's codes under one preprocessing live, beside the mixture directory
    (never inside it: the mixture is swapped in whole when rebuilt)."""
    if not re.fullmatch(r"[0-9a-f]{64}", tokenizer_sha256 or ""):
        raise ValueError(f"the vq_codes store needs a tokenizer sha256, got {tokenizer_sha256!r}")
    if vq_preprocess not in VQ_PREPROCESS:
        raise ValueError(f"vq_preprocess must be one of {VQ_PREPROCESS}, got {vq_preprocess!r}")
    location = output_path(mixture_dir)
    if not is_local(location):
        raise ValueError(f"{location}: the vq_codes store is kept beside a local mixture only")
    return Path(str(location)).parent / STORE / f"{tokenizer_sha256[:16]}-{vq_preprocess}"


def subset_files(subset_dir: Path) -> list[Path]:
    """Every split's shards of a subset (held-out rows have generation targets too)."""
    return [path for split in SPLITS for path in split_files(subset_dir, split)]


def subset_key(subset_dir: Path) -> str:
    """`<subset>-<fingerprint[:16]>`: names a subset version's index and manifest."""
    return f"{Path(str(subset_dir)).name}-{shards_fingerprint(subset_files(subset_dir))[:16]}"


def data_version(
    tokenizer_sha256: str, vq_preprocess: str, image_hashes: set[str] | list[str]
) -> str:
    """Changes only with the tokenizer, the preprocessing or the set of images."""
    digest = hashlib.sha256(f"{tokenizer_sha256}\x1f{vq_preprocess}".encode())
    for key in sorted(image_hashes):
        digest.update(key.encode())
    return digest.hexdigest()


@dataclass
class Plan:
    """What a mixture needs: sample id -> image key per subset, and where each distinct image
    is first found (file, row group, row) so a chunk can read just its images."""

    samples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    first_seen: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    @property
    def images(self) -> set[str]:
        return set(self.first_seen)


def plan(mixture_dir: Path, subsets: tuple[str, ...] = SUBSETS) -> Plan:
    """Hash every generation target of the subsets (no decoding, no encoding)."""
    result = Plan()
    for subset in subsets:
        subset_dir = output_path(mixture_dir) / subset
        files = subset_files(subset_dir)
        if not files:
            continue
        pairs: list[tuple[str, str]] = []
        index = RowIndex.build(files, GENERATION)
        for file, group, positions in index.row_groups():
            path = index.files[file]
            table = resolve_images(
                open_shard(path).read_row_group(group, columns=TARGET_COLUMNS), path
            )
            rows = table.take(index.row[positions]).to_pylist()
            for position, row in zip(positions, rows, strict=True):
                key = image_sha256(target_image_bytes(row))
                pairs.append((row["id"], key))
                result.first_seen.setdefault(
                    key, (index.files[file], group, int(index.row[position]))
                )
        if pairs:
            result.samples[subset_key(subset_dir)] = pairs
    return result


def chunk_files(store: Path) -> list[Path]:
    return sorted(store.glob("chunk-*.parquet")) if store.is_dir() else []


def stored_images(store: Path) -> set[str]:
    """Image keys already encoded in finished chunks (only the small key column is read)."""
    keys: set[str] = set()
    for path in chunk_files(store):
        parquet = open_shard(path)
        keys.update(parquet.read(columns=["image_sha256"])["image_sha256"].to_pylist())
    return keys


def _read_images(plan: Plan, keys: list[str]) -> list[bytes]:
    """The encoded bytes of `keys`, one row group read per distinct (file, group)."""
    by_group: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for key in keys:
        file, group, row = plan.first_seen[key]
        by_group.setdefault((file, group), []).append((row, key))
    found: dict[str, bytes] = {}
    for (file, group), wanted in by_group.items():
        table = resolve_images(open_shard(file).read_row_group(group, columns=TARGET_COLUMNS), file)
        rows = table.take([row for row, _ in wanted]).to_pylist()
        for (_, key), row in zip(wanted, rows, strict=True):
            found[key] = target_image_bytes(row)
    return [found[key] for key in keys]


@dataclass
class CodesReport:
    """What a `compute` run did (the asset's metadata)."""

    store: str
    tokenizer_sha256: str
    vq_preprocess: str
    data_version: str
    samples: int
    images: int  # distinct target images the mixture needs
    images_encoded: int  # by this run (all ranks), the rest were already stored
    chunks_written: int
    seconds: float
    subsets: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Progress:
    """Counts and rates while encoding: a tqdm bar on a terminal, log lines otherwise."""

    def __init__(self, total: int, log: Log | None, every_s: float = 10.0) -> None:
        self.total, self.log, self.every_s = total, log, every_s
        self.done, self.started, self.last = 0, time.perf_counter(), 0.0
        self.bar = None
        if log is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", desc="vq_codes", file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter() - self.started
        if self.log and (now - self.last >= self.every_s or self.done >= self.total):
            self.last = now
            self.log(
                f"vq_codes: {self.done}/{self.total} images encoded, "
                f"{self.done / max(now, 1e-9):.1f} images/s"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_chunk(store: Path, keys: list[str], codes: torch.Tensor) -> Path:
    """One finished chunk, atomically (the shard writer renames it into place complete)."""
    name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    grid = int(codes.shape[-1])
    with ShardWriter(store, CODES_SCHEMA, prefix=f"chunk-{name}", hf_images=False) as writer:
        for key, value in zip(keys, codes, strict=True):
            flat = value.to(torch.int32).flatten().tolist()
            writer.write({"image_sha256": key, "codes": flat, "grid": grid})
    return store / writer.shards[0].path


def compute(
    mixture_dir: Path,
    vq_dir: Path,
    subsets: tuple[str, ...] = SUBSETS,
    device: str | None = None,
    log: Log | None = None,
    chunk_images: int = CHUNK_IMAGES,
    crash_after_chunks: int | None = None,
    *,
    vq_preprocess: str,
) -> CodesReport:
    """Encode every distinct generation target image the subsets need that the store lacks,
    resized as `vq_preprocess` says (the model preset's: see the module docstring).

    Resumable: finished chunks are kept and skipped. Runs on every rank of a torchrun group
    (chunk k on rank k % world). `log` None draws a tqdm bar (the CLI); otherwise progress
    goes to `log` with counts and rates (Dagster). `crash_after_chunks` simulates a crash
    (tests)."""
    started = time.perf_counter()
    d = distributed.setup(device)
    say = (log or print) if d.is_main else (lambda message: None)
    vq, tokenizer = load_vq_tokenizer(Path(vq_dir))
    vq.to(d.device)
    store = store_dir(mixture_dir, tokenizer, vq_preprocess)
    store.mkdir(parents=True, exist_ok=True)
    needed = plan(mixture_dir, subsets)
    images = needed.images
    missing = sorted(images - stored_images(store))
    version = data_version(tokenizer, vq_preprocess, images)
    say(
        f"vq_codes: {sum(len(p) for p in needed.samples.values())} generation samples, "
        f"{len(images)} distinct images, {len(images) - len(missing)} already encoded, "
        f"{len(missing)} to encode into {store}"
    )
    chunks = [missing[i : i + chunk_images] for i in range(0, len(missing), chunk_images)]
    mine = [chunk for k, chunk in enumerate(chunks) if k % d.world == d.rank]
    progress = Progress(sum(len(c) for c in mine), log if d.is_main else (lambda m: None))
    for number, keys in enumerate(mine):
        if crash_after_chunks is not None and number >= crash_after_chunks:
            raise RuntimeError(f"simulated crash after {number} chunks")
        codes = torch.cat(
            [
                encode_images(vq, _read_images(needed, keys[i : i + ENCODE_BATCH]), vq_preprocess)
                for i in range(0, len(keys), ENCODE_BATCH)
            ]
        )
        _write_chunk(store, keys, codes)
        progress.update(len(keys))
    progress.close()
    distributed.barrier(d)
    if d.is_main:
        _write_indexes(store, needed, tokenizer, vq_preprocess)
    distributed.barrier(d)
    (encoded,) = distributed.sum_across([float(sum(len(c) for c in mine))], d)
    report = CodesReport(
        store=str(store),
        tokenizer_sha256=tokenizer,
        vq_preprocess=vq_preprocess,
        data_version=version,
        samples=sum(len(p) for p in needed.samples.values()),
        images=len(images),
        images_encoded=int(encoded),
        chunks_written=len(chunks),
        seconds=round(time.perf_counter() - started, 3),
        subsets={key: len(pairs) for key, pairs in needed.samples.items()},
    )
    say(f"vq_codes: done, {report.to_json()}")
    return report


def _write_indexes(store: Path, needed: Plan, tokenizer: str, vq_preprocess: str) -> None:
    """Per subset: its id -> image index, then its manifest (the completion marker)."""
    where: dict[str, str] = {}
    for path in chunk_files(store):
        keys = open_shard(path).read(columns=["image_sha256"])["image_sha256"].to_pylist()
        where.update(dict.fromkeys(keys, path.name))
    for key, pairs in needed.samples.items():
        with ShardWriter(store, INDEX_SCHEMA, prefix=f"index-{key}", hf_images=False) as writer:
            for sample_id, image in pairs:
                writer.write({"id": sample_id, "image_sha256": image})
        hashes = {image for _, image in pairs}
        missing = hashes - set(where)
        if missing:
            raise RuntimeError(f"vq_codes: {len(missing)} images of {key} missing from chunks")
        write_json(
            store / f"{key}.json",
            {
                "subset": key,
                "tokenizer_sha256": tokenizer,
                "vq_preprocess": vq_preprocess,
                "data_version": data_version(tokenizer, vq_preprocess, hashes),
                "samples": len(pairs),
                "images": len(hashes),
                "index": writer.shards[0].path,
                "chunks": sorted({where[h] for h in hashes}),
            },
        )


def load_codes(
    mixture_dir: Path, subset_dir: Path, tokenizer_sha256: str, vq_preprocess: str
) -> dict[str, torch.Tensor] | None:
    """Code grids by sample id of a subset's generation rows, or None when the store holds no
    complete entry for this subset version, tokenizer and preprocessing (the caller encodes
    instead)."""
    if not tokenizer_sha256 or not is_local(output_path(mixture_dir)):
        return None
    store = store_dir(mixture_dir, tokenizer_sha256, vq_preprocess)
    manifest_path = store / f"{subset_key(subset_dir)}.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    recorded = (manifest.get("tokenizer_sha256"), manifest.get("vq_preprocess"))
    if recorded != (tokenizer_sha256, vq_preprocess):
        return None
    index = open_shard(store / manifest["index"]).read()
    wanted = pa.array(sorted(set(index["image_sha256"].to_pylist())), pa.string())
    grids: dict[str, torch.Tensor] = {}
    for name in manifest["chunks"]:
        table = open_shard(store / name).read()
        table = table.filter(pc.is_in(table["image_sha256"], value_set=wanted))
        for key, flat, grid in zip(
            table["image_sha256"].to_pylist(),
            table["codes"].to_pylist(),
            table["grid"].to_pylist(),
            strict=True,
        ):
            grids[key] = torch.from_numpy(np.asarray(flat, dtype=np.int64).reshape(-1, grid))
    ids, keys = index["id"].to_pylist(), index["image_sha256"].to_pylist()
    absent = {key for key in keys if key not in grids}
    if absent:
        raise RuntimeError(f"{store}: {len(absent)} indexed images have no codes (store damaged)")
    return {sample_id: grids[key] for sample_id, key in zip(ids, keys, strict=True)}


def main(argv: list[str] | None = None) -> int:
    """`python -m healthgpt.train.vq_codes --mixture data/mixture --vq data/checkpoints/
    vq_tokenizer --model-preset m3` (under torchrun for several GPUs); prints the report as
    JSON. The model preset the stages train says how images are resized."""
    parser = argparse.ArgumentParser(prog="healthgpt.train.vq_codes", description=__doc__)
    parser.add_argument("--mixture", required=True, type=Path)
    parser.add_argument("--vq", required=True, type=Path)
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--model-preset", default="tiny", choices=sorted(PRESETS))
    args = parser.parse_args(argv)
    preprocess = get_preset(args.model_preset).vq_preprocess
    try:
        report = compute(args.mixture, args.vq, device=args.device, vq_preprocess=preprocess)
    finally:
        distributed.teardown()
    if distributed.launched_rank() == 0:
        print(json.dumps(report.to_json(), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
