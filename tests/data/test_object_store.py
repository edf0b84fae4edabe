"""Datasets on an object store: the same code writes and reads them as on a local disk.

Two stores: fsspec's in-memory file system, and a real S3 API (moto's S3 server on a loopback
port) reached through s3fs exactly as a production bucket is (`s3://` URLs, the endpoint
from the standard `AWS_ENDPOINT_URL`).
"""

from __future__ import annotations

import uuid

import fsspec
import pytest

import healthgpt.data.shards as shards
from healthgpt.data.ingest import checks as validate
from healthgpt.data.ingest.run import IncompleteSource, chunk_dir, ingest, ingested_parts
from healthgpt.data.mixture.build import build_mixture, input_files
from healthgpt.data.mixture.config import demo_preset
from healthgpt.data.samples import build_sample_source
from healthgpt.data.shards import open_shard, read_manifest, shard_paths
from healthgpt.data.sources import ReaderOptions
from healthgpt.storage import output_path
from healthgpt.train.data import split_files

# Together enough for the demo preset to fill every stage subset.
SOURCES = ("vqa_rad", "slake", "pathvqa", "ixi", "synthrad2023")


@pytest.fixture(scope="module")
def s3_server():
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
    s3fs = pytest.importorskip("s3fs", reason="s3fs is in the dev and object-store extras")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        patch.setenv("AWS_ACCESS_KEY_ID", "test")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        s3fs.S3FileSystem.clear_instance_cache()
        yield s3fs.S3FileSystem()
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture(params=["memory", "s3"])
def bucket(request):
    name = f"healthgpt-{uuid.uuid4().hex[:8]}"
    fs = request.getfixturevalue("s3_server") if request.param == "s3" else None
    fs = fs or fsspec.filesystem("memory")
    fs.mkdir(name)
    yield f"{request.param}://{name}"
    fs.rm(name, recursive=True)


def sha256s(directory) -> list[str]:
    return [s["sha256"] for s in read_manifest(directory)["shards"]]


def test_ingest_and_mixture_on_an_object_store_match_the_local_build(bucket, tmp_path):
    local, remote = {}, {}
    for source in SOURCES:
        root = build_sample_source(source, tmp_path / "sources")
        local[source] = tmp_path / "ingested" / source
        remote[source] = f"{bucket}/ingested/{source}"
        ingest(source, root, local[source])
        ingest(source, root, remote[source])
        assert sha256s(remote[source]) == sha256s(local[source])
        manifest = read_manifest(remote[source])
        assert manifest["root"].startswith("v-"), "files live under a version prefix"
        for check in (validate.check_schema, validate.check_unique_ids):
            assert check(remote[source])[0]
        rows = sum(open_shard(p).metadata.num_rows for p in shard_paths(remote[source]))
        assert rows == manifest["summary"]["records"]
    assert [name for name, _ in input_files(remote)] == [name for name, _ in input_files(local)]

    config = demo_preset(workers=1)
    built = build_mixture(local, tmp_path / "mixture", config)
    build_mixture(remote, f"{bucket}/mixture", config)
    assert sha256s(f"{bucket}/mixture") == sha256s(tmp_path / "mixture")
    train = split_files(output_path(f"{bucket}/mixture") / "stage3", "train")
    assert train and all(str(p).startswith(bucket) for p in train)
    assert sum(open_shard(p).metadata.num_rows for p in train) == built.rows("stage3") > 0


def test_a_failed_publication_leaves_the_previous_version_readable(bucket, tmp_path, monkeypatch):
    root = build_sample_source("vqa_rad", tmp_path / "sources")
    target = f"{bucket}/ingested/vqa_rad"
    ingest("vqa_rad", root, target, ReaderOptions(image_size=64))
    before = read_manifest(target)
    first_rows = [open_shard(p).read().num_rows for p in shard_paths(target)]

    real_upload, calls = shards.upload_file, []

    def upload_then_die(local, dest):
        calls.append(dest)
        if len(calls) == 2:
            raise ConnectionError("network gone mid-publication")
        return real_upload(local, dest)

    monkeypatch.setattr(shards, "upload_file", upload_then_die)
    with pytest.raises(ConnectionError):
        ingest("vqa_rad", root, target, ReaderOptions(image_size=96))
    assert read_manifest(target) == before, "the manifest still names the old version"
    assert [open_shard(p).read().num_rows for p in shard_paths(target)] == first_rows

    monkeypatch.setattr(shards, "upload_file", real_upload)
    ingest("vqa_rad", root, target, ReaderOptions(image_size=96))
    second = read_manifest(target)
    assert second["root"] != before["root"]


def versions(target: str) -> set[str]:
    return {p.name for p in output_path(target).iterdir() if p.name.startswith("v-")}


def test_old_versions_are_pruned_only_when_neither_recent_current_nor_previous(
    bucket, tmp_path, monkeypatch
):
    root = build_sample_source("vqa_rad", tmp_path / "sources")
    target = f"{bucket}/ingested/vqa_rad"
    roots = []
    for size in (64, 96, 128):
        ingest("vqa_rad", root, target, ReaderOptions(image_size=size))
        roots.append(read_manifest(target)["root"])
    assert versions(target) == set(roots), "young versions stay for readers still on them"

    monkeypatch.setattr(shards, "KEEP_VERSIONS_S", 0)
    ingest("vqa_rad", root, target, ReaderOptions(image_size=160))
    current = read_manifest(target)["root"]
    assert versions(target) == {roots[-1], current}, "current and previous kept, older gone"

    uploads = []
    monkeypatch.setattr(shards, "upload_file", lambda *args: uploads.append(args))
    ingest("vqa_rad", root, target, ReaderOptions(image_size=160))
    assert uploads == [] and read_manifest(target)["root"] == current, "same content: no-op"
    assert versions(target) == {roots[-1], current}


def test_publishing_a_whole_source_removes_an_earlier_chunked_layout(bucket, tmp_path):
    root = build_sample_source("mimic_cxr", tmp_path / "sources")
    target = f"{bucket}/ingested/mimic_cxr"
    for index in range(2):
        ingest("mimic_cxr", root, chunk_dir(target, (index, 2)), ReaderOptions(chunk=(index, 2)))
    ingest("mimic_cxr", root, target)
    assert [p.name for p in ingested_parts(target)] == ["mimic_cxr"]
    assert "chunk" not in read_manifest(target)["summary"]


def test_chunks_on_an_object_store_are_found_and_checked_for_completeness(bucket, tmp_path):
    root = build_sample_source("mimic_cxr", tmp_path / "sources")
    target = f"{bucket}/ingested/mimic_cxr"
    ingest("mimic_cxr", root, chunk_dir(target, (0, 2)), ReaderOptions(chunk=(0, 2)))
    with pytest.raises(IncompleteSource, match="1 of 2 chunks not ingested"):
        ingested_parts(target)
    ingest("mimic_cxr", root, chunk_dir(target, (1, 2)), ReaderOptions(chunk=(1, 2)))
    assert [p.name for p in ingested_parts(target)] == ["chunk=000", "chunk=001"]
