from __future__ import annotations

import json

import datasets
import fsspec
import pyarrow.parquet as pq
import pytest
from PIL import Image

from healthgpt.cli import main
from healthgpt.data.ingest.run import IncompleteSource, ingest, ingested_parts
from healthgpt.data.shards import read_manifest
from healthgpt.data.sources import LayoutError, ReaderOptions


@pytest.fixture
def root(tmp_path):
    """The toy source's root, beside (never around) the outputs written under `tmp_path`."""
    (tmp_path / "src").mkdir()
    return tmp_path / "src"


def test_every_item_lands_in_a_shard_or_in_quarantine(tmp_path, root, toy_source):
    options = ReaderOptions(extra={"n": 20, "bad": [3, 7]})
    summary = ingest(toy_source, root, tmp_path / "out", options)
    assert (summary.items, summary.accepted_items, summary.quarantined) == (20, 18, 2)
    assert summary.by_split == {"train": 14, "test": 4}
    quarantine = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    assert sorted(q["item"] for q in quarantine) == ["3", "7"]
    assert all("planted bad" in q["reason"] for q in quarantine)
    manifest = read_manifest(tmp_path / "out")
    assert sum(s["rows"] for s in manifest["shards"]) == 18
    assert manifest["summary"]["reconciled"] is True


def test_shards_load_with_hf_datasets_with_named_splits_and_decoded_images(
    tmp_path, root, toy_source
):
    ingest(toy_source, root, tmp_path / "out", ReaderOptions(extra={"n": 10}))
    loaded = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "data"))
    assert set(loaded) == {"train", "test"}
    assert loaded["train"].num_rows == 8
    assert isinstance(loaded["train"][0]["image"], Image.Image)


def test_rerun_is_idempotent_and_byte_identical(tmp_path, root, toy_source):
    options = ReaderOptions(extra={"n": 12, "bad": [1]})
    first = ingest(toy_source, root, tmp_path / "out", options)
    second = ingest(toy_source, root, tmp_path / "out", options)
    assert [s.sha256 for s in first.shards] == [s.sha256 for s in second.shards]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_manifest.json",
        "data",
        "quarantine.parquet",
    ]


def test_missing_root_fails_fast_naming_the_layout(tmp_path, toy_source):
    with pytest.raises(LayoutError, match="Expected layout"):
        ingest(toy_source, tmp_path / "absent", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_prints_one_json_line_summary(tmp_path, root, toy_source, capsys):
    assert (
        main(["ingest", "toy", "--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    )
    line = capsys.readouterr().out.strip()
    payload = json.loads(line)
    assert payload["records"] == 10
    assert payload["quarantined"] == 0
    assert payload["shards"] == 2
    assert payload["splits"] == {"test": 2, "train": 8}


def test_cli_reads_one_chunk_and_the_chunks_add_up(tmp_path, root, toy_source, capsys):
    totals = {"records": 0, "items": 0}
    out = tmp_path / "toy"
    for index in range(3):
        argv = ["ingest", "toy", "--root", str(root), "--out", str(out), "--quiet"]
        assert main([*argv, "--chunk", f"{index}/3"]) == 0
        assert read_manifest(out / f"chunk={index:03d}")["summary"]["chunk"] == [index, 3]
        payload = json.loads(capsys.readouterr().out.strip())
        assert payload["chunk"] == [index, 3]
        assert payload["items"] + payload["other_chunks"] == 10
        totals["records"] += payload["records"]
        totals["items"] += payload["items"]
    assert totals == {"records": 10, "items": 10}
    assert [p.name for p in ingested_parts(out)] == ["chunk=000", "chunk=001", "chunk=002"]


def test_one_chunk_written_where_the_whole_source_belongs_is_refused(tmp_path, root, toy_source):
    ingest(toy_source, root, tmp_path / "toy", ReaderOptions(chunk=(1, 3)))
    with pytest.raises(IncompleteSource, match="holds chunk 1 of 3 only"):
        ingested_parts(tmp_path / "toy")


def test_cli_refuses_a_chunk_outside_the_plan(tmp_path, toy_source, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "ingest",
                "toy",
                "--root",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--chunk",
                "3/3",
            ]
        )
    assert "chunk 3 does not exist among 3" in capsys.readouterr().err


def test_cli_writes_to_an_object_store_url(toy_source, tmp_path, root, capsys):
    bucket = f"memory://cli-{tmp_path.name}"
    try:
        argv = ["ingest", "toy", "--root", str(root), "--out", f"{bucket}/toy", "--quiet"]
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["records"] == 10
        assert read_manifest(f"{bucket}/toy")["summary"]["records"] == 10
    finally:
        fsspec.filesystem("memory").rm(bucket, recursive=True)
