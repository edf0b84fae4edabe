from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from healthgpt.data import shards
from healthgpt.data.schema import IMAGE_TYPE, QUARANTINE_SCHEMA, RECORD_SCHEMA
from healthgpt.data.shards import (
    ImageTableWriter,
    ShardWriter,
    read_manifest,
    resolve_images,
    rows_table,
    write_manifest,
)
from healthgpt.storage import atomic_directory, clean_stale


def _rows(n: int) -> list[dict]:
    return [
        {"source": "s", "item": str(i), "rel_path": None, "reason": "x" * 100} for i in range(n)
    ]


def test_writer_rolls_over_at_target_size_and_keeps_every_row(tmp_path):
    with ShardWriter(
        tmp_path, QUARANTINE_SCHEMA, target_shard_bytes=2_000, row_group_bytes=500, hf_images=False
    ) as writer:
        for row in _rows(100):
            writer.write(row)
    shards = writer.shards
    assert len(shards) > 1
    assert sum(s.rows for s in shards) == 100
    table = pa.concat_tables(pq.read_table(tmp_path / s.path) for s in shards)
    assert table.column("item").to_pylist() == [str(i) for i in range(100)]
    assert not list(tmp_path.glob(".*.tmp"))


def test_same_rows_give_byte_identical_shards(tmp_path):
    hashes = []
    for run in ("a", "b"):
        with ShardWriter(tmp_path / run, QUARANTINE_SCHEMA, hf_images=False) as writer:
            for row in _rows(50):
                writer.write(row)
        hashes.append([s.sha256 for s in writer.shards])
    assert hashes[0] == hashes[1]


IMAGE_VALUES = [
    {"bytes": b"\x89PNG first", "path": None},
    None,
    {"bytes": None, "path": "sha256:ab"},
    {"bytes": b"", "path": None},
    {"bytes": b"second"},
    {"bytes": bytes(range(256)) * 40, "path": "p"},
]
WITH_BYTES = [v for v in IMAGE_VALUES if v and v.get("bytes")]  # no null anywhere


@pytest.mark.parametrize("images", [IMAGE_VALUES, WITH_BYTES])
def test_image_columns_are_written_as_from_pylist_writes_them(tmp_path, monkeypatch, images):
    rows = [
        {"id": str(i), "source": "s", "split": "train", "kind": "vqa", "modality": "CT",
         "image": image, "target_image": images[-1 - i], "question": f"q{i}"}
        for i, image in enumerate(images)
    ]  # fmt: skip
    expected = pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)
    assert rows_table(rows, RECORD_SCHEMA).equals(expected)
    odd = [{"id": "x", "image": {"bytes": bytearray(b"a bytearray"), "path": None}}]
    assert rows_table(odd, RECORD_SCHEMA).equals(pa.Table.from_pylist(odd, schema=RECORD_SCHEMA))
    written = {}
    for name, group_bytes in (("new", 8 << 20), ("new, small groups", 5000), ("from_pylist", 0)):
        if name == "from_pylist":
            monkeypatch.setattr(
                shards, "rows_table", lambda rows, schema, _: pa.Table.from_pylist(rows, schema)
            )
        with ShardWriter(
            tmp_path / name, RECORD_SCHEMA, hf_images=False, row_group_bytes=group_bytes or 5000
        ) as writer:
            for row in rows * 3:
                writer.write(row)
        written[name] = (tmp_path / name / writer.shards[0].path).read_bytes()
        if name != "new":
            # Row groups of a few rows each: the writer's reused image buffer never shows
            # one group's bytes in another.
            file = pq.ParquetFile(tmp_path / name / writer.shards[0].path)
            assert file.num_row_groups > 3
            assert (
                file.read().to_pylist() == pa.Table.from_pylist(rows * 3, RECORD_SCHEMA).to_pylist()
            )
    assert written["new, small groups"] == written["from_pylist"]
    assert pq.read_table(tmp_path / "new").equals(pq.read_table(tmp_path / "from_pylist"))


def test_failed_write_leaves_no_shard_and_no_temp_file(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, QUARANTINE_SCHEMA) as writer:
        writer.write(_rows(1)[0])
        writer._flush()
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_keeps_old_version_on_crash(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as staging:
        (staging / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "v").write_text("2")
        raise RuntimeError("crash")
    assert (target / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["out"]


def test_clean_stale_removes_dead_staging_but_not_live_or_recent_foreign(tmp_path):
    import os

    from healthgpt.storage import _HOST

    dead = tmp_path / f".out.staging-{_HOST}-999999999-abcd"
    live = tmp_path / f".out.staging-{_HOST}-{os.getpid()}-abcd"
    foreign_recent = tmp_path / ".out.staging-otherpod-1-abcd"
    foreign_old = tmp_path / ".out.retired-otherpod-2-abcd"
    for path in (dead, live, foreign_recent, foreign_old):
        path.mkdir()
    os.utime(foreign_old, (0, 0))
    removed = clean_stale(tmp_path / "out")
    assert sorted(removed) == sorted([dead, foreign_old])
    assert live.exists() and foreign_recent.exists()


def test_failed_swap_removes_its_staging_directory(tmp_path, monkeypatch):
    import os

    def broken_replace(src, dst):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), atomic_directory(tmp_path / "out") as staging:
        (staging / "v").write_text("1")
        monkeypatch.setattr(os, "replace", broken_replace)
    monkeypatch.undo()
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []


def test_read_manifest_of_incomplete_directory_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match="never completed"):
        read_manifest(tmp_path)


REF_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("image", IMAGE_TYPE)])


def _dataset_with_refs(root, images: list[bytes]):
    """A dataset whose one sample shard references `images` through its images table."""
    table = ImageTableWriter(root)
    rows = [
        {"id": str(i), "image": table.ref({"bytes": data, "path": None})}
        for i, data in enumerate(images)
    ]
    rows.append({"id": "none", "image": None})
    with ShardWriter(root / "stage" / "data", REF_SCHEMA, prefix="train", hf_images=False) as w:
        for row in rows:
            w.write(row)
    write_manifest(root, [*(s.under("stage/data") for s in w.shards), *table.close()])
    return root / "stage" / "data" / "train-00000.parquet"


def test_images_are_stored_once_and_resolved(tmp_path):
    images = [b"first png", b"second png", b"first png"]
    shard = _dataset_with_refs(tmp_path, images)
    stored = pq.read_table(tmp_path / "images" / "data" / "images-00000.parquet")
    assert stored.num_rows == 2
    raw = pq.read_table(shard)
    assert all(v["bytes"] is None for v in raw["image"].to_pylist() if v)
    resolved = resolve_images(raw, shard).to_pylist()
    assert [r["image"]["bytes"] if r["image"] else None for r in resolved] == [*images, None]
    # Inline bytes pass through untouched.
    assert resolve_images(pa.Table.from_pylist(resolved, REF_SCHEMA), shard).to_pylist() == resolved


def test_a_rebuilt_dataset_is_reindexed_and_a_dangling_reference_named(tmp_path):
    shard = _dataset_with_refs(tmp_path, [b"old"])
    assert resolve_images(pq.read_table(shard), shard)["image"][0]["bytes"].as_py() == b"old"
    shard = _dataset_with_refs(tmp_path, [b"new"])  # same paths, other images
    assert resolve_images(pq.read_table(shard), shard)["image"][0]["bytes"].as_py() == b"new"
    dangling = pq.read_table(shard).to_pylist()
    dangling[0]["image"] = {"bytes": None, "path": "sha256:" + "0" * 64}
    with pytest.raises(KeyError, match="not in"):
        resolve_images(pa.Table.from_pylist(dangling, REF_SCHEMA), shard)


def test_only_a_writer_of_image_bytes_keeps_a_buffer_for_them(tmp_path):
    """The reused image buffer is sized by the images a row group holds: a writer of rows
    without images, or with images stored by reference, keeps none."""
    base = {"source": "s", "split": "train", "kind": "vqa", "modality": "CT"}
    text = [{**base, "id": str(i), "question": "q" * 2000} for i in range(40)]
    refs = [
        {**base, "id": str(i), "image": {"bytes": None, "path": f"sha256:{i:064x}"}}
        for i in range(40)
    ]
    blobs = [
        {**base, "id": str(i), "image": {"bytes": bytes([i]) * 3000, "path": None}}
        for i in range(40)
    ]
    kept = {}
    for name, rows in (("text", text), ("refs", refs), ("blobs", blobs)):
        with ShardWriter(tmp_path / name, RECORD_SCHEMA, row_group_bytes=20_000) as writer:
            for row in rows:
                writer.write(row)
            kept[name] = len(writer._scratch)
        assert (
            pq.read_table(tmp_path / name).to_pylist()
            == pa.Table.from_pylist(rows, RECORD_SCHEMA).to_pylist()
        )
    assert kept["text"] == kept["refs"] == 0
    assert kept["blobs"] >= 3000 * 5
