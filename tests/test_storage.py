"""Atomic writes to a local path and to an fsspec object store (the in-memory one)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from upath import UPath

from healthgpt.storage import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    is_local,
    output_path,
    upload_file,
)


@pytest.fixture(params=["local", "memory"])
def base(request, tmp_path) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path / "out")
        return
    bucket = f"memory://test-{uuid.uuid4().hex[:8]}"
    yield bucket
    memory = fsspec.filesystem("memory")
    if memory.exists(bucket.removeprefix("memory://")):
        memory.rm(bucket.removeprefix("memory://"), recursive=True)


def listing(directory: UPath) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_output_path_keeps_local_paths_local_and_urls_remote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = output_path("data/ingested")
    assert is_local(local) and isinstance(local, Path)
    assert local == tmp_path / "data" / "ingested"
    assert output_path(f"file://{tmp_path}/x") == tmp_path / "x"
    remote = output_path("memory://bucket/ingested/vqa_rad")
    assert not is_local(remote) and remote.protocol == "memory"
    assert (
        str(remote / "part-00000.parquet") == "memory://bucket/ingested/vqa_rad/part-00000.parquet"
    )


def test_write_then_overwrite(base):
    target = output_path(f"{base}/sub/manifest.json")
    atomic_write_text(target, '{"v": 1}')
    assert target.read_text() == '{"v": 1}'
    atomic_write_bytes(target, b'{"v": 2}')
    assert target.read_bytes() == b'{"v": 2}'
    assert listing(target.parent) == ["manifest.json"], "no temporary file left behind"


def test_failed_write_leaves_the_previous_file_and_no_debris(base):
    target = output_path(f"{base}/shard.parquet")
    atomic_write_bytes(target, b"complete v1")
    with pytest.raises(RuntimeError, match="disk full"), atomic_open(target) as handle:
        handle.write(b"half of v2")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"complete v1"
    assert listing(target.parent) == ["shard.parquet"]


def test_failed_first_write_creates_nothing(base):
    target = output_path(f"{base}/new.bin")
    with pytest.raises(KeyboardInterrupt), atomic_open(target) as handle:
        handle.write(b"x" * 1000)
        raise KeyboardInterrupt
    assert not target.exists()


def test_upload_file(base, tmp_path):
    local = tmp_path / "train-00000.parquet"
    local.write_bytes(bytes(range(256)) * 1000)
    target = upload_file(local, f"{base}/data/train-00000.parquet")
    assert target.read_bytes() == local.read_bytes()
    assert listing(target.parent) == ["train-00000.parquet"]


def test_only_whole_file_modes():
    with pytest.raises(ValueError, match="mode"), atomic_open("memory://x/y", "ab"):
        pass
