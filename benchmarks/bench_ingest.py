"""Ingestion throughput against its floor, and peak memory as the input grows tenfold.

The floor is the same work without the pipeline: decode every input JPEG and encode the
output PNG in a plain loop. A second floor also computes each image's identity as ingestion
does (pixel hash and perceptual hash, `decode/identity.py`, asked for a batch of images at
a time as PathVQA's reader asks): per-image work that ingestion took over from every later
mixture build, so the record carries it. A third also writes each PNG's bytes to a file, as
the output must reach the disk. The pipeline adds the reader, validation, quarantine
accounting, Parquet pages and row groups, and a sha256 per shard; the goal is at least 0.95
of the floor's images per CPU-second. All import their code before the timed region
(startup, not throughput).

All are measured in CPU time (`time.process_time`, one process each), which holds on a
shared machine where wall time does not: floors and pipeline run interleaved (A B A B, and
with `--baseline-ref` the pipeline of that git version as a third variant), `--repeats`
times, each in a fresh process; the ratio is the median of the back-to-back ratios, with
its range, and the 1-minute load average before and after each run is recorded. The
pipeline run also times its own calls of the floor's decode + encode: that share of its CPU
(`codec_cpu_over_pipeline_cpu`) is the same ratio measured within one process, which the
load of other processes moves much less. It also times the image identities it computes
(`identity_cpu_over_pipeline_cpu`): work the floor does not do, which ingestion took over
from every later mixture build (`decode/identity.py`).

Same process (`same_process_ratio_*`): the floors and the pipeline also run `--repeats`
rounds inside one process, in an order that rotates each round. This is the ratio itself,
without the noise between processes (the floor's own rate moves +-5-10% from one process to
the next here) and without assuming, as the codec's share does, that the codec runs as fast
inside the pipeline as in the floor's loop. Every variant decodes and encodes one image
before timing (`_warm_codec`).

Chunked: the same source ingested as 4 stable chunks one after the other. Every chunk lists
the whole source and skips other chunks' items before decoding, so the sum of the chunk
times over the whole-source time is the cost of splitting (1.0 would be free).

Input: a PathVQA-layout source (`pvqa/images/train/*.jpg` + `pvqa/qas/train/train_qa.pkl`)
made from scikit-image's real immunohistochemistry slide, one question per image.

    python -m benchmarks.bench_ingest [--images 500] [--growth 10] [--repeats 5]
        [--baseline-ref <commit>]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import REPO, baseline_code, spread, write_result


def make_source(root: Path, n_images: int, seed: int = 0) -> list[Path]:
    """Write `n_images` distinct 512x512 JPEG crops of a real IHC slide in PathVQA layout."""
    from skimage import data

    slide = np.asarray(data.immunohistochemistry())
    big = np.concatenate([np.concatenate([slide, slide[:, ::-1]], 1)] * 2, 0)
    rng = np.random.default_rng(seed)
    images = root / "pvqa" / "images" / "train"
    images.mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    for index in range(n_images):
        y, x = rng.integers(0, big.shape[0] - 512), rng.integers(0, big.shape[1] - 512)
        crop = big[y : y + 512, x : x + 512]
        if index % 2:
            crop = crop[::-1]
        name = f"train_{index:06d}"
        path = images / f"{name}.jpg"
        Image.fromarray(np.ascontiguousarray(crop)).save(path, quality=90)
        paths.append(path)
        rows.append({"image": name, "question": "Is this a stained section?", "answer": "yes"})
    qas = root / "pvqa" / "qas" / "train"
    qas.mkdir(parents=True, exist_ok=True)
    (qas / "train_qa.pkl").write_bytes(pickle.dumps(rows))
    return paths


def run_floor(
    root: Path, out: Path, size: int = 256, identities: bool = False, write: bool = False
) -> dict:
    """Decode and re-encode every image in a plain loop: the lower bound of the work. The
    limits are read once, as the pipeline's reader reads them (not once per image).
    `identities`: also compute each image's identity as ingestion does (noted at encoding
    inside `remember_identities`; the record's column value, `identity_value`, asked for a
    batch of images at a time, as PathVQA's reader encodes a batch of rows' images before
    building their records), the part of ingestion's per-image work the floor otherwise
    leaves out. `write`: also write each PNG's bytes to one file, as the output's bytes
    must reach the disk."""
    _warm_codec(root)
    out.mkdir(parents=True, exist_ok=True)
    images, seconds, cpu = _floor_loop(root, size, identities, out / "floor.bin" if write else None)
    return {"images": images, "seconds": seconds, "cpu_s": cpu, "images_per_cpu_s": images / cpu}


def _floor_loop(
    root: Path, size: int = 256, identities: bool = False, write_to: Path | None = None
) -> tuple[int, float, float]:
    from healthgpt.data.decode.identity import identity_value, remember_identities
    from healthgpt.data.decode.imaging import image_file_to_png
    from healthgpt.data.limits import Limits
    from healthgpt.data.sources.pathvqa import BATCH_ROWS

    paths = sorted((root / "pvqa" / "images" / "train").glob("*.jpg"))
    started, cpu = time.perf_counter(), time.process_time()
    limits = Limits.from_options()
    with contextlib.ExitStack() as stack:
        if identities:
            stack.enter_context(remember_identities())
        sink = stack.enter_context(open(write_to, "wb")) if write_to else None
        for start in range(0, len(paths), BATCH_ROWS):
            batch = paths[start : start + BATCH_ROWS]
            pngs = [image_file_to_png(path, size, limits=limits) for path in batch]
            for png in pngs:
                if identities:
                    identity_value(png)
                if sink:
                    sink.write(png)
    return len(paths), time.perf_counter() - started, time.process_time() - cpu


def run_same_process(root: Path, out: Path, rounds: int) -> dict:
    """The floor, the floor with identities and the pipeline in one process, `rounds` times,
    in an order that rotates each round: their ratios without the +-10% that the same work
    moves between two processes on this machine (nor the assumption, behind the codec's
    share, that the codec runs as fast inside the pipeline as in the floor's loop)."""
    import shutil

    from healthgpt.data.ingest.run import ingest
    from healthgpt.data.sources import ReaderOptions

    _import_pipeline()
    _warm_codec(root)

    def pipeline(round_: int) -> float:
        target = out / f"r{round_}"
        started = time.process_time()
        ingest("pathvqa", root, target, ReaderOptions(deid_salt=SALT))
        cpu = time.process_time() - started
        shutil.rmtree(target)  # the next round writes to a page cache as empty as this one's
        return cpu

    def floor_output(_: int) -> float:
        target = out / "floor.bin"
        cpu = _floor_loop(root, identities=True, write_to=target)[2]
        target.unlink()
        return cpu

    out.mkdir(parents=True, exist_ok=True)
    variants = {
        "floor": lambda _: _floor_loop(root)[2],
        "floor_identity": lambda _: _floor_loop(root, identities=True)[2],
        "floor_output": floor_output,
        "pipeline": pipeline,
    }
    names, cpu = list(variants), {name: [] for name in variants}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            cpu[name].append(variants[name](round_))
    return {
        f"ratio_to_{label}": [f / p for f, p in zip(cpu[name], cpu["pipeline"], strict=True)]
        for name, label in FLOORS.items()
    } | {"cpu_s": cpu}


def _warm_codec(root: Path) -> None:
    """Decode and encode one of the images before timing, in every variant alike: the first
    call loads PIL's plugins and the codecs' tables (about 20 ms, 0.4% of a run), startup
    that the timed loop would otherwise charge to whichever variant met it first."""
    from healthgpt.data.decode.imaging import image_file_to_png

    image_file_to_png(next((root / "pvqa" / "images" / "train").glob("*.jpg")), 256)


FLOORS = {
    "floor": "floor",
    "floor_identity": "floor_with_identities",
    "floor_output": "floor_with_identities_and_write",
}
"""The floors by child mode, and the label of their ratios: decode + encode; the same and
the images' identities; the same and writing the PNG bytes to a file."""

# The benchmark's images and ids are made up: a fixed salt, no private salt file.
SALT = "benchmark-made-up-data"


def _import_pipeline() -> None:
    """Import what the pipeline imports on first use, before timing, as the floor imports
    its decoder before timing: startup, not throughput."""
    from healthgpt.data.schema import hf_features_metadata
    from healthgpt.data.sources.registry import reader_class

    hf_features_metadata()  # one-off import of `datasets` (~1 s)
    reader_class("pathvqa")  # the reader's module and the decoders (~20 ms)


def _time_codec() -> dict[str, float]:
    """From now on, add up the CPU time spent in the floor's call (decode + encode) in
    `["codec"]`, and in computing image identities (`decode/identity.py`, which ingestion
    does and the floor does not) in `["identity"]`: the pipeline's own share is then
    measured within one process, without the noise between two processes on a shared
    machine. Call before the reader is imported. A baseline version without identities
    only has the first."""
    import healthgpt.data.ingest.run as ingest_run
    from healthgpt.data.decode import imaging

    spent = {"codec": 0.0, "identity": 0.0, "identity_in_codec": 0.0}
    depth = [0]

    def timed(function, key: str):
        def call(*args, **kwargs):
            started = time.process_time()
            depth[0] += 1
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1
                spent[key] += time.process_time() - started
                if key == "identity" and depth[0]:
                    spent["identity_in_codec"] += time.process_time() - started

        return call

    imaging.image_file_to_png = timed(imaging.image_file_to_png, "codec")
    for module, name in (
        (imaging, "identity_to_note"),
        (imaging, "note_encoded"),
        (ingest_run, "identity_value"),
    ):
        if hasattr(module, name):
            setattr(module, name, timed(getattr(module, name), "identity"))
    return spent


def run_pipeline(root: Path, out: Path) -> dict:
    from healthgpt.data.ingest.run import ingest
    from healthgpt.data.sources import ReaderOptions

    codec = _time_codec()
    _import_pipeline()
    _warm_codec(root)
    for key in codec:
        codec[key] = 0.0
    started, cpu = time.perf_counter(), time.process_time()
    summary = ingest("pathvqa", root, out, ReaderOptions(deid_salt=SALT))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "images": summary.records,
        "seconds": seconds,
        "cpu_s": cpu,
        "images_per_cpu_s": summary.records / cpu,
        "codec_share": (codec["codec"] - codec["identity_in_codec"]) / cpu,
        "identity_share": codec["identity"] / cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_chunks(root: Path, out: Path, n_chunks: int = 4) -> dict:
    from healthgpt.data.ingest.run import chunk_dir, ingest
    from healthgpt.data.sources import ReaderOptions

    _import_pipeline()
    _warm_codec(root)
    started, cpu, records = time.perf_counter(), time.process_time(), 0
    for index in range(n_chunks):
        chunk = (index, n_chunks)
        records += ingest(
            "pathvqa", root, chunk_dir(out, chunk), ReaderOptions(chunk=chunk, deid_salt=SALT)
        ).records
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"images": records, "seconds": seconds, "cpu_s": cpu}


def _child(mode: str, root: str, out: str) -> None:
    if mode.startswith("same_process:"):
        rounds = int(mode.split(":")[1])
        print(json.dumps(run_same_process(Path(root), Path(out), rounds)))
        return
    if mode in FLOORS:
        identities, write = mode != "floor", mode == "floor_output"
        result = run_floor(Path(root), Path(out), identities=identities, write=write)
    else:
        result = {"pipeline": run_pipeline, "chunks": run_chunks}[mode](Path(root), Path(out))
    print(json.dumps(result))


def measure(mode: str, root: Path, out: Path, code: Path | None = None) -> dict:
    """Run one measurement in a fresh process, so peak RSS belongs to that run alone;
    `code`: a directory holding another version of `healthgpt` (the baseline)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_ingest",
        "--child",
        mode,
        str(root),
        str(out),
    ]
    load = os.getloadavg()[0]
    completed = subprocess.run(
        command, check=True, capture_output=True, text=True, cwd=code or REPO
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return {**result, "load_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}


def _spread_of(values: list[float]) -> dict[str, float]:
    return spread([{"v": value} for value in values], "v")


def _ratios(pipelines: list[dict], floors: list[dict]) -> list[dict]:
    return [
        {"r": p["images_per_cpu_s"] / f["images_per_cpu_s"]}
        for p, f in zip(pipelines, floors, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--growth", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-ref", default=None, help="also run this git version")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "ROOT", "OUT"))
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        make_source(small, args.images)
        make_source(large, args.images * args.growth, seed=1)
        base = baseline_code(args.baseline_ref, Path(tmp) / "b") if args.baseline_ref else None
        runs: dict[str, list[dict]] = {name: [] for name in (*FLOORS, "pipeline", "baseline")}
        for repeat in range(args.repeats):  # interleaved: floors, pipeline[, baseline], ...
            for name in FLOORS:
                runs[name].append(measure(name, small, Path(tmp) / f"{name}{repeat}"))
            runs["pipeline"].append(measure("pipeline", small, Path(tmp) / f"p{repeat}"))
            if base:
                out = Path(tmp) / f"b{repeat}"
                runs["baseline"].append(measure("pipeline", small, out, base))
            print(json.dumps({k: v[-1] for k, v in runs.items() if v}), flush=True)
        same = f"same_process:{args.repeats}"
        together = measure(same, small, Path(tmp) / "s")
        together_base = measure(same, small, Path(tmp) / "sb", base) if base else None
        chunked = measure("chunks", small, Path(tmp) / "o3")
        grown = measure("pipeline", large, Path(tmp) / "o2")
    pipeline = sorted(runs["pipeline"], key=lambda run: run["cpu_s"])[args.repeats // 2]
    if chunked["images"] != pipeline["images"]:
        raise AssertionError(f"chunks hold {chunked['images']} of {pipeline['images']} images")
    result = {
        "images": args.images,
        "repeats": args.repeats,
        "pipeline_images_per_cpu_s": spread(runs["pipeline"], "images_per_cpu_s"),
        **{
            f"{label}_images_per_cpu_s": spread(runs[n], "images_per_cpu_s")
            for n, label in FLOORS.items()
        },
        **{
            f"ratio_to_{label}": spread(_ratios(runs["pipeline"], runs[name]), "r")
            for name, label in FLOORS.items()
        },
        **{
            f"same_process_ratio_to_{label}": _spread_of(together[f"ratio_to_{label}"])
            for label in FLOORS.values()
        },
        "codec_cpu_over_pipeline_cpu": spread(runs["pipeline"], "codec_share"),
        "identity_cpu_over_pipeline_cpu": spread(runs["pipeline"], "identity_share"),
        "codec_and_identity_cpu_over_pipeline_cpu": spread(
            [{"s": r["codec_share"] + r["identity_share"]} for r in runs["pipeline"]], "s"
        ),
        "chunked_4_cpu_over_whole": round(chunked["cpu_s"] / pipeline["cpu_s"], 3),
        "peak_rss_mb": round(pipeline["peak_rss_mb"], 1),
        f"peak_rss_mb_x{args.growth}": round(grown["peak_rss_mb"], 1),
        "rss_growth_ratio": round(grown["peak_rss_mb"] / pipeline["peak_rss_mb"], 3),
        "load_1min": [x for v in runs.values() for run in v for x in run["load_1min"]],
    }
    if base:
        result["baseline"] = {
            "ref": args.baseline_ref,
            "pipeline_images_per_cpu_s": spread(runs["baseline"], "images_per_cpu_s"),
            "ratio_to_floor": spread(_ratios(runs["baseline"], runs["floor"]), "r"),
            "same_process_ratio_to_floor": _spread_of(together_base["ratio_to_floor"]),
            "codec_cpu_over_pipeline_cpu": spread(runs["baseline"], "codec_share"),
            "identity_cpu_over_pipeline_cpu": spread(runs["baseline"], "identity_share"),
        }
    write_result("ingest", result)
    print("| metric | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
