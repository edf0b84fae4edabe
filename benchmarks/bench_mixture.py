"""Mixture build throughput, and peak memory as the input grows tenfold.

Input: six synthetic ingested sources in the ingestion layout (VQA with several questions per
image and a VQA-RAD-like train/test image overlap, chest X-ray reports, MRI slices of
subjects, MR/CT pairs, LLaVA conversations with some multi-image ones), 256x256 grayscale
PNGs of 40-50 KB.

Images are made cheaply but are all different: each is 8 horizontal bands of 32 rows taken
from a pool of noisy smooth base images, and the PNG is assembled from per-row deflate
blocks compressed once per base row (a valid PNG that PIL decodes like any other). Band
mixes differ, so pixel hashes and perceptual hashes differ; a few records deliberately
repeat an image to give dedup and decontamination work.

Each size is generated in one subprocess and every build runs in its own, so the peak RSS
and the CPU time (`resource.getrusage`, the build's process and its workers) belong to that
build alone. Throughput is records per CPU-second, which holds on a shared machine where
wall time does not: the small input is built `--repeats` times and the median reported with
its range; with `--baseline-ref` the same input is also built by that git version of the
library, interleaved (A B A B), and the speedup is the median of the back-to-back ratios.
The 1-minute load average before and after each build is recorded. The large input
(`--growth` times more records) is built once, for peak memory.

    python -m benchmarks.bench_mixture [--records 10000] [--growth 10] [--repeats 5]
        [--baseline-ref <commit>]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from benchmarks import REPO, baseline_code, spread, write_result

SIDE, BANDS, POOL = 256, 8, 64


class ImageFactory:
    """Distinct 256x256 PNGs in ~0.1 ms each, from pre-compressed rows of base images."""

    def __init__(self, seed: int = 0) -> None:
        from PIL import Image

        rng = np.random.default_rng(seed)
        self.raw: list[list[bytes]] = []
        self.deflated: list[list[bytes]] = []
        for _ in range(POOL):
            grid = (rng.random((8, 8)) * 255).astype(np.uint8)
            smooth = np.asarray(Image.fromarray(grid).resize((SIDE, SIDE), Image.BICUBIC), float)
            pixels = np.clip(smooth + rng.normal(0, 5, smooth.shape), 0, 255).astype(np.uint8)
            # PNG filter "Sub" (left neighbour only) keeps rows independent and compressible.
            sub = np.diff(pixels.astype(np.int16), axis=1, prepend=0).astype(np.uint8)
            rows = [b"\x01" + sub[y].tobytes() for y in range(SIDE)]
            self.raw.append(rows)
            self.deflated.append([self._deflate_row(row) for row in rows])
        self.header = b"\x89PNG\r\n\x1a\n" + self._chunk(
            b"IHDR", struct.pack(">IIBBBBB", SIDE, SIDE, 8, 0, 0, 0, 0)
        )
        final = zlib.compressobj(1, zlib.DEFLATED, -15)
        self.final_block = final.compress(b"") + final.flush()

    @staticmethod
    def _deflate_row(row: bytes) -> bytes:
        compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
        return compressor.compress(row) + compressor.flush(zlib.Z_FULL_FLUSH)

    @staticmethod
    def _chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    def png(self, code: int) -> bytes:
        """The image numbered `code`: band b comes from base (code // POOL**b) % POOL, mixed."""
        rng = np.random.default_rng(code)
        bases = rng.integers(0, POOL, BANDS)
        rows_per_band = SIDE // BANDS
        raw, deflated = [], []
        for y in range(SIDE):
            base = int(bases[y // rows_per_band])
            raw.append(self.raw[base][y])
            deflated.append(self.deflated[base][y])
        data = b"\x78\x01" + b"".join(deflated) + self.final_block
        data += struct.pack(">I", zlib.adler32(b"".join(raw)))
        return self.header + self._chunk(b"IDAT", data) + self._chunk(b"IEND", b"")


def generate(root: Path, n_records: int, seed: int = 0, identities: bool = True) -> dict[str, Path]:
    """Write the six synthetic sources (about `n_records` records in all) under `root`, with
    each image's identity as ingestion stores it, or without (`identities=False`: the
    record/v1 layout of ingestions from before the identity columns)."""
    from healthgpt.data.ingest.run import add_identities
    from healthgpt.data.schema import RECORD_SCHEMA, new_record
    from healthgpt.data.shards import ShardWriter, write_manifest
    from healthgpt.storage import atomic_directory

    factory = ImageFactory(seed)
    rng = np.random.default_rng(seed)
    counter = iter(range(10**9))

    def image() -> bytes:
        return factory.png(next(counter) + seed * 10**8)

    def write(source: str, records) -> Path:
        out = root / source
        with atomic_directory(out) as staging:
            writers: dict[str, ShardWriter] = {}
            for record in records:
                if record["split"] not in writers:
                    writers[record["split"]] = ShardWriter(
                        staging / "data", RECORD_SCHEMA, prefix=record["split"]
                    )
                writers[record["split"]].write(add_identities(record) if identities else record)
            shards = [s.under("data") for split in sorted(writers) for s in writers[split].close()]
            write_manifest(staging, shards, summary={"source": source})
        return out

    def vqa(source: str, n: int):
        modalities = ["ct", "mri", "x-ray", "ultrasound", "pet"]
        train_images: list[bytes] = []
        made = 0
        while made < n:
            test = rng.random() < 0.1
            # VQA-RAD-like: some test images are also asked about in train.
            reuse = test and train_images and rng.random() < 0.3
            png = train_images[int(rng.integers(len(train_images)))] if reuse else image()
            if not test and len(train_images) < 64:
                train_images.append(png)
            for q in range(min(8, n - made)):
                kind = rng.random()
                if kind < 0.5:
                    question, answer, answer_type, qtype = (
                        f"Is there finding {q}?",
                        str(rng.choice(["yes", "no"])),
                        "closed",
                        "PRES",
                    )
                elif kind < 0.6:
                    question, answer = "Which modality is this?", str(rng.choice(modalities))
                    answer_type, qtype = "closed", "MODALITY"
                else:
                    question, answer = f"What is abnormal in region {q}?", f"finding {made % 97}"
                    answer_type, qtype = "open", "ABN"
                yield new_record(
                    source=source,
                    orig_id=f"{source}-{made}",
                    split="test" if test else "train",
                    kind="vqa",
                    modality="CT",
                    image=png,
                    question=question,
                    answer=answer,
                    answer_type=answer_type,
                    meta=json.dumps({"question_type": qtype}),
                )
                made += 1

    def reports(n: int):
        for i in range(n):
            yield new_record(
                source="mimic_cxr",
                orig_id=f"r{i}",
                split="test" if i % 20 == 0 else "train",
                kind="report",
                modality="X-Ray",
                image=image(),
                body_part="chest",
                subject_id=f"p{i // 3}",
                text=f"FINDINGS: {'No acute process. ' * 8}Case {i}. IMPRESSION: normal {i}.",
            )

    def slices(n: int):
        for i in range(n):
            yield new_record(
                source="ixi",
                orig_id=f"IXI{i // 40:04d}-T1:{i % 40}",
                split="train",
                kind="image",
                modality="MRI",
                image=image(),
                body_part="brain",
                subject_id=f"subj{i // 40}",
                orig_path=f"IXI{i // 40:04d}-T1.nii.gz",
                meta=json.dumps({"sequence": "T1"}),
            )

    def pairs(n: int):
        for i in range(n):
            subject = i // 30
            yield new_record(
                source="synthrad2023",
                orig_id=f"{subject}:{i % 30}",
                split="train",
                kind="pair",
                modality="MRI",
                image=image(),
                target_image=image(),
                target_modality="CT",
                task="mri_to_ct",
                body_part="brain" if subject % 2 else "pelvis",
                subject_id=f"s{subject}",
            )

    def conversations(n: int):
        for i in range(n):
            yield new_record(
                source="llava_json",
                orig_id=f"c{i}",
                split="train",
                kind="conversation",
                modality="Other",
                image=image(),
                conversations=[
                    {"from": "human", "value": "<image>\nDescribe the image."},
                    {"from": "gpt", "value": f"A medical image, case {i}. " * 4},
                ],
                meta=json.dumps({"n_images": 2 if i % 20 == 0 else 1}),
            )

    shares = {
        "vqa_rad": 0.1,
        "pathvqa": 0.15,
        "mimic_cxr": 0.15,
        "ixi": 0.2,
        "synthrad2023": 0.15,
        "llava_json": 0.25,
    }
    count = {name: int(n_records * share) for name, share in shares.items()}
    return {
        "vqa_rad": write("vqa_rad", vqa("vqa_rad", count["vqa_rad"])),
        "pathvqa": write("pathvqa", vqa("pathvqa", count["pathvqa"])),
        "mimic_cxr": write("mimic_cxr", reports(count["mimic_cxr"])),
        "ixi": write("ixi", slices(count["ixi"])),
        "synthrad2023": write("synthrad2023", pairs(count["synthrad2023"])),
        "llava_json": write("llava_json", conversations(count["llava_json"])),
    }


def _config(workers: int):
    from healthgpt.data.mixture.config import MixtureConfig

    return MixtureConfig(
        task_sources={"reconstruction": ["llava_json"], "super_resolution": ["ixi"]},
        stage1_include=["llava_json/conversation", "*/report", "*/reconstruction"],
        stage2_size=2_000,
        workers=workers,
    )


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_build(root: Path, out: Path, workers: int) -> dict:
    from healthgpt.data.mixture.build import build_mixture, input_files
    from healthgpt.data.mixture.parallel import resolve_workers

    dirs = {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}
    input_bytes = sum(path.stat().st_size for _, path in input_files(dirs))
    started, cpu = time.perf_counter(), _cpu_seconds()
    summary = build_mixture(dirs, out, _config(workers))
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    # A build from before the images table has no `images`: its shards hold the bytes.
    shards = [i for v in summary.shards.values() for i in v] + getattr(summary, "images", [])
    output_bytes = sum(i.bytes for i in shards)
    return {
        "records": summary.records,
        "candidates": summary.candidates,
        "rows": {s: summary.rows(s) for s in ("stage1", "stage2", "stage3", "eval")},
        "removed": summary.removed,
        "input_mb": round(input_bytes / 2**20, 1),
        "output_mb": round(output_bytes / 2**20, 1),
        "output_to_input": round(output_bytes / input_bytes, 3),
        "seconds": round(seconds, 1),
        "records_per_s": round(summary.records / seconds, 1),
        "cpu_s": round(cpu, 2),
        "records_per_cpu_s": round(summary.records / cpu, 1),
        "workers": resolve_workers(workers),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "worker_peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
    }


def _child(mode: str, root: str, arg: str, workers: int) -> None:
    if mode == "generate":
        started = time.perf_counter()
        count, _, layout = arg.partition(":")
        generate(Path(root), int(count), identities=layout != "without-identities")
        print(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
    else:
        print(json.dumps(run_build(Path(root), Path(arg), workers)))


def _run(mode: str, root: Path, arg: str, workers: int, code: Path | None = None) -> dict:
    """One generation or build in a fresh process; `code`: a directory holding another
    version of `healthgpt` to build with (the baseline), else this checkout's."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_mixture",
        "--child",
        mode,
        str(root),
        arg,
        "--workers",
        str(workers),
    ]
    load = os.getloadavg()[0]
    completed = subprocess.run(
        command, check=True, capture_output=True, text=True, cwd=code or REPO
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return {**result, "load_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--growth", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--baseline-ref",
        default=None,
        help="a git ref to build the same input with, interleaved with this checkout "
        "(A B A B), e.g. the commit before a change",
    )
    parser.add_argument(
        "--without-identities",
        action="store_true",
        help="input without the image identities ingestion stores (the mixture decodes "
        "every image, as for ingestions from before the identity columns)",
    )
    parser.add_argument("--child", nargs=3, metavar=("MODE", "ROOT", "ARG"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    args = parser.parse_args()
    if args.child:
        _child(*args.child, args.workers)
        return
    variants: dict[str, Path | None] = {"current": None}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if args.baseline_ref:
            variants = {"baseline": baseline_code(args.baseline_ref, Path(tmp) / "baseline")}
            variants["current"] = None
        small_root = Path(tmp) / f"in{args.records}"
        layout = ":without-identities" if args.without_identities else ""
        _run("generate", small_root, f"{args.records}{layout}", args.workers)
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, code in variants.items():  # interleaved: A B A B ...
                out = Path(tmp) / f"out-{name}-{repeat}"
                runs[name].append(_run("build", small_root, str(out), args.workers, code))
                shutil.rmtree(out, ignore_errors=True)
                print(f"{name} #{repeat}: {json.dumps(runs[name][-1])}", flush=True)
        shutil.rmtree(small_root, ignore_errors=True)
        n_large = args.records * args.growth
        large_root = Path(tmp) / f"in{n_large}"
        _run("generate", large_root, f"{n_large}{layout}", args.workers)
        large = _run("build", large_root, str(large_root) + "-out", args.workers)
        print(f"current, {n_large:,} records: {json.dumps(large)}", flush=True)
    current = runs["current"]
    small = sorted(current, key=lambda run: run["cpu_s"])[len(current) // 2]
    result = {
        "input": "without identities" if args.without_identities else "with identities",
        "records_small": small["records"],
        "records_large": large["records"],
        "repeats": args.repeats,
        "workers": small["workers"],
        "records_per_cpu_s": spread(current, "records_per_cpu_s"),
        "records_per_s": spread(current, "records_per_s"),
        "output_to_input": small["output_to_input"],
        "records_per_cpu_s_large": large["records_per_cpu_s"],
        "peak_rss_mb_small": small["peak_rss_mb"],
        "peak_rss_mb_large": large["peak_rss_mb"],
        "rss_growth_ratio": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "worker_peak_rss_mb_small": small["worker_peak_rss_mb"],
        "worker_peak_rss_mb_large": large["worker_peak_rss_mb"],
        "load_1min": [load for run in [*current, large] for load in run["load_1min"]],
    }
    if "baseline" in runs:
        base = runs["baseline"]
        result["baseline"] = {
            "ref": args.baseline_ref,
            "records_per_cpu_s": spread(base, "records_per_cpu_s"),
            "records_per_s": spread(base, "records_per_s"),
            "output_to_input": base[0]["output_to_input"],
            "peak_rss_mb": statistics.median(run["peak_rss_mb"] for run in base),
            "load_1min": [load for run in base for load in run["load_1min"]],
        }
        # Ratios of the pairs measured back to back, then their median.
        result["cpu_speedup_vs_baseline"] = spread(
            [
                {"r": c["records_per_cpu_s"] / b["records_per_cpu_s"]}
                for b, c in zip(base, current, strict=True)
            ],
            "r",
        )
        result["output_vs_baseline"] = round(
            small["output_mb"] / statistics.median(run["output_mb"] for run in base), 3
        )
    result["runs"] = {"small": runs, "large": large}
    write_result("mixture", result)
    print("| metric | value |\n|---|---|")
    for key, value in result.items():
        if key != "runs":
            print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
