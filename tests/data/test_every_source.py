"""What every reader owes its users, checked once for all of them on the bundled samples:
the sample builds deterministically and ingests to the counts its manifest states, the same
input gives byte-identical shards and ids, and the shards load with HF datasets with named
splits and decoded images of the configured size."""

from __future__ import annotations

import datasets
import pytest
from PIL import Image

from healthgpt.data.decode import identity
from healthgpt.data.decode.identity import hash_png, stored_identity
from healthgpt.data.samples import build_sample_source
from healthgpt.data.schema import HASH_COLUMNS
from healthgpt.data.sources import SOURCES, ReaderOptions
from tests.data.outputs import manifest_sample_counts, records, run, tree_digest


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_sample_ingests_as_its_manifest_says_reproducibly_and_loads_with_hf(
    source, tmp_path, monkeypatch
):
    root = build_sample_source(source, tmp_path / "sources")
    assert tree_digest(build_sample_source(source, tmp_path / "again")) == tree_digest(root)
    decoded: list[bytes] = []
    monkeypatch.setattr(identity, "hash_png", lambda data: decoded.append(data) or hash_png(data))
    first = run(source, root, tmp_path / "a")
    monkeypatch.undo()
    # Every image's identity is stored, as noted when the reader encoded it: none decoded.
    stored = [r for r in records(tmp_path / "a") if r["image"] or r["target_image"]]
    assert stored and not decoded
    for record in stored:
        for column, hash_column in HASH_COLUMNS.items():
            if record[column]:
                data = record[column]["bytes"]
                assert stored_identity(record[hash_column], data) == hash_png(data)
    expected = manifest_sample_counts(source)
    assert (first.items, first.quarantined) == (expected["items"], expected["quarantined"])
    assert expected["records_min"] <= first.records <= expected["records_max"]
    second = run(source, root, tmp_path / "b")
    assert first.records > 0
    assert [s.sha256 for s in first.shards] == [s.sha256 for s in second.shards]
    assert [r["id"] for r in records(tmp_path / "a")] == [r["id"] for r in records(tmp_path / "b")]

    loaded = datasets.load_dataset(
        "parquet", data_dir=str(tmp_path / "a" / "data"), cache_dir=str(tmp_path / "hf")
    )
    assert {split: ds.num_rows for split, ds in loaded.items()} == dict(first.by_split)
    image = loaded[sorted(loaded)[0]][0]["image"]
    assert isinstance(image, Image.Image)
    assert image.size == (ReaderOptions().image_size,) * 2
