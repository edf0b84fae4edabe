"""Reliability of ingestion outputs: killed workers, reruns and concurrent writers.

Each ingestion runs `healthgpt ingest` in its own process on a slow toy source
(tests/pipelines/slow_source.py), so it can be SIGKILLed in the middle like a run worker
whose pod or machine disappears.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from healthgpt.data.shards import MANIFEST_NAME, read_manifest
from healthgpt.storage import atomic_directory

REPO = Path(__file__).resolve().parents[2]
N_ITEMS = 60


def start_ingest(
    root: Path, out: Path, *, sleep: float = 0.0, halfway: Path | None = None, chunk: str = ""
):
    env = {
        **os.environ,
        "SLOW_SOURCE_N": str(N_ITEMS),
        "SLOW_SOURCE_SLEEP": str(sleep),
        "SLOW_SOURCE_HALFWAY": str(halfway or ""),
    }
    command = [sys.executable, "-m", "tests.pipelines.slow_source"]
    return subprocess.Popen(
        [*command, "--root", str(root), "--out", str(out), "--quiet"]
        + (["--chunk", chunk] if chunk else []),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def ingest(root: Path, out: Path, **kwargs) -> None:
    process = start_ingest(root, out, **kwargs)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()


def kill_halfway(root: Path, out: Path, marker: Path, chunk: str = "") -> int:
    """Start an ingestion, SIGKILL it once half the items are read; return its pid."""
    process = start_ingest(root, out, sleep=0.05, halfway=marker, chunk=chunk)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the ingestion never got halfway"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return process.pid


def tree_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory`, by relative path."""
    return {
        path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def leftovers(out: Path) -> list[str]:
    """Staging or retired directories of `out` (its small swap lock file is not debris)."""
    return sorted(
        p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and p.is_dir()
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """An uninterrupted run: what every other run must reproduce byte for byte."""
    base = tmp_path_factory.mktemp("reference")
    (base / "root").mkdir()
    ingest(base / "root", base / "out")
    hashes = tree_hashes(base / "out")
    assert {"_manifest.json", "quarantine.parquet"} <= set(hashes)
    assert any(name.startswith("data/train-") for name in hashes)
    return base / "root", hashes


def test_killed_ingestions_never_show_a_partial_dataset_and_reruns_are_identical(
    tmp_path, reference
):
    root, expected = reference
    out = tmp_path / "ingested" / "slowtoy"

    pid = kill_halfway(root, out, tmp_path / "halfway-1")
    assert not out.exists(), "a killed first run must not leave a dataset behind"
    assert any(name.endswith(f"-{pid}-" + name.rsplit("-", 1)[-1]) for name in leftovers(out))
    ingest(root, out)
    assert tree_hashes(out) == expected
    assert leftovers(out) == [], "the rerun removes the dead run's staging directory"

    kill_halfway(root, out, tmp_path / "halfway-2")
    assert tree_hashes(out) == expected, "readers still see the last complete version"
    assert read_manifest(out)["summary"]["reconciled"] is True
    ingest(root, out)
    assert tree_hashes(out) == expected
    assert leftovers(out) == []


def test_a_killed_chunk_partition_leaves_the_other_chunks_alone_and_reruns_identically(
    tmp_path, reference
):
    root, _ = reference
    ingest(root, tmp_path / "reference", chunk="1/3")  # --chunk writes <out>/chunk=NNN
    expected = tree_hashes(tmp_path / "reference" / "chunk=001")
    source = tmp_path / "ingested" / "slowtoy"
    ingest(root, source, chunk="0/3")
    neighbour = tree_hashes(source / "chunk=000")

    kill_halfway(root, source, tmp_path / "halfway", chunk="1/3")
    assert not (source / "chunk=001").exists(), "no partial chunk is visible"
    assert tree_hashes(source / "chunk=000") == neighbour
    ingest(root, source, chunk="1/3")
    assert tree_hashes(source / "chunk=001") == expected
    assert leftovers(source / "chunk=001") == []
    assert read_manifest(source / "chunk=001")["summary"]["chunk"] == [1, 3]


def test_concurrent_ingestions_into_one_output_both_finish_complete(tmp_path, reference):
    """Two runs of the same asset at once (a manual launch during an automatic one): each
    builds in its own staging directory, neither removes the other's (its pid is alive),
    and the last to finish wins with a complete, identical dataset."""
    root, expected = reference
    out = tmp_path / "ingested" / "slowtoy"
    first = start_ingest(root, out, sleep=0.005)
    second = start_ingest(root, out, sleep=0.01)
    for process in (first, second):
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    assert tree_hashes(out) == expected
    assert leftovers(out) == []
    assert (out / MANIFEST_NAME).is_file()


def test_simultaneous_swaps_all_succeed(tmp_path):
    """Writers finishing at the same instant: without the lock around the swap (an exists
    check, then two renames) about 1% of swaps here failed with ENOTEMPTY or ENOENT and leaked
    their staging directory."""
    target = tmp_path / "out"
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        for index in range(800):
            try:
                with atomic_directory(target) as staging:
                    (staging / "value").write_text(f"{tag}{index}")
            except OSError as error:
                errors.append(error)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (target / "value").read_text() in {"a799", "b799"}
    assert errors == []
    debris = [p.name for p in tmp_path.iterdir() if "-" in p.name and p.is_dir()]
    assert debris == [], "no staging or retired directories left behind"
