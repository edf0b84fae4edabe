"""The object-store path against a real S3 API: moto's S3 server on a loopback port, reached
through s3fs exactly as a production bucket would be (`s3://...` URLs, endpoint from the
standard `AWS_ENDPOINT_URL`)."""

from __future__ import annotations

import pytest

from healthgpt.data.ingest import chunk_dir, ingest, ingested_parts
from healthgpt.data.mixture import build_mixture
from healthgpt.data.mixture_config import demo_preset
from healthgpt.data.samples import build_sample_source
from healthgpt.data.shards import open_shard, read_manifest
from healthgpt.data.sources import ReaderOptions
from healthgpt.storage import output_path
from healthgpt.train.data import split_files

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
s3fs = pytest.importorskip("s3fs", reason="s3fs is in the dev and object-store extras")

SOURCES = ("vqa_rad", "slake", "pathvqa", "ixi", "synthrad2023")
BUCKET = "healthgpt-test"


@pytest.fixture(scope="module")
def s3():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        patch.setenv("AWS_ACCESS_KEY_ID", "test")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir(BUCKET)
        yield f"s3://{BUCKET}"
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def sha256s(directory) -> list[str]:
    return [s["sha256"] for s in read_manifest(directory)["shards"]]


def test_ingest_and_mixture_on_s3_match_the_local_build(s3, tmp_path):
    local, remote = {}, {}
    for source in SOURCES:
        root = build_sample_source(source, tmp_path / "sources")
        local[source] = tmp_path / "ingested" / source
        remote[source] = f"{s3}/ingested/{source}"
        ingest(source, root, local[source])
        ingest(source, root, remote[source])
        assert sha256s(remote[source]) == sha256s(local[source])

    config = demo_preset(workers=1)
    built = build_mixture(local, tmp_path / "mixture", config)
    build_mixture(remote, f"{s3}/mixture", config)
    assert sha256s(f"{s3}/mixture") == sha256s(tmp_path / "mixture")
    train = split_files(output_path(f"{s3}/mixture") / "stage3", "train")
    assert train and all(str(p).startswith("s3://") for p in train)
    assert sum(open_shard(p).metadata.num_rows for p in train) == built.rows("stage3") > 0


def test_chunks_on_s3(s3, tmp_path):
    root = build_sample_source("mimic_cxr", tmp_path / "sources")
    target = f"{s3}/ingested/mimic_cxr"
    for index in range(2):
        options = ReaderOptions(chunk=(index, 2))
        ingest("mimic_cxr", root, chunk_dir(target, (index, 2)), options)
    assert [p.name for p in ingested_parts(target)] == ["chunk=000", "chunk=001"]
