"""A mixture build killed mid-write leaves no partial mixture, and a rerun is identical."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from healthgpt.data.ingest.run import ingest
from healthgpt.data.sources import ReaderOptions

REPO = Path(__file__).resolve().parents[2]


def _tree(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _build(ingested: Path, out: Path, marker: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.pipelines.mixture_worker", str(ingested), str(out)]
    return subprocess.Popen(
        [*command, *([str(marker)] if marker else [])],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _kill_mid_write(ingested: Path, out: Path, marker: Path) -> None:
    process = _build(ingested, out, marker)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the build never started writing"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


def test_killed_mixture_build_keeps_the_last_complete_version(tmp_path, toy_source):
    ingested = tmp_path / "ingested" / "toy"
    (tmp_path / "src").mkdir()
    ingest(toy_source, tmp_path / "src", ingested, ReaderOptions(extra={"n": 40}))
    out = tmp_path / "mixture"

    _kill_mid_write(ingested, out, tmp_path / "m1")
    assert not out.exists(), "a killed first build must leave no mixture behind"

    finished = _build(ingested, out)
    _, stderr = finished.communicate(timeout=300)
    assert finished.returncode == 0, stderr.decode()
    expected = _tree(out)
    assert "_manifest.json" in expected

    _kill_mid_write(ingested, out, tmp_path / "m2")
    assert _tree(out) == expected, "readers still see the last complete mixture"

    rerun = _build(ingested, out)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr.decode()
    assert _tree(out) == expected, "a rerun gives byte-identical output"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".mixture.")]
    assert all(name.endswith(".lock") for name in leftovers), leftovers
