"""Image identities computed once, at encoding: the same as decoding the bytes, stored by
ingestion, and read by the mixture instead of decoding every image again."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from healthgpt.data.decode import identity
from healthgpt.data.decode.identity import (
    hash_png,
    identity_of,
    identity_value,
    remember_identities,
    stored_identity,
)
from healthgpt.data.decode.imaging import encode_png
from healthgpt.data.ingest.run import ingest
from tests.data.mixture_helpers import field_image, standard_sources

rng = np.random.default_rng(0)
IMAGES = {
    "L": field_image(1, 48),
    "RGB": field_image(2, 40).convert("RGB"),
    "RGBA": Image.fromarray(rng.integers(0, 255, (30, 20, 4), dtype=np.uint8), "RGBA"),
    "I;16": Image.fromarray(rng.integers(0, 4000, (24, 24), dtype=np.uint16)),
    "P": field_image(3, 32).convert("P"),
    "float array": rng.normal(size=(20, 28)).astype(np.float32),
}


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every decode `identity_of` falls back to."""
    calls: list[bytes] = []

    def counted(data: bytes) -> identity.ImageHash:
        calls.append(data)
        return hash_png(data)

    monkeypatch.setattr(identity, "hash_png", counted)
    return calls


@pytest.mark.parametrize("name", list(IMAGES))
@pytest.mark.parametrize("size", [None, 32])
def test_identity_noted_at_encoding_is_the_identity_of_the_decoded_bytes(name, size, decodes):
    with remember_identities():
        data = encode_png(IMAGES[name], size)
        noted = identity_of(data)
    assert decodes == []
    assert noted == hash_png(data)


def test_outside_a_block_nothing_is_computed_at_encoding_and_lookups_decode(monkeypatch, decodes):
    def refuse(image):
        raise AssertionError("hashed outside a remember_identities block")

    monkeypatch.setattr(identity, "hash_image", refuse)
    data = encode_png(IMAGES["L"], None)
    monkeypatch.undo()
    monkeypatch.setattr(identity, "hash_png", lambda d: decodes.append(d) or hash_png(d))
    assert identity_of(data) == hash_png(data) and decodes == [data]


def test_bytes_not_encoded_in_the_block_are_decoded(decodes):
    outside = encode_png(IMAGES["RGB"], None)
    with remember_identities():
        assert identity_of(outside) == hash_png(outside)
    assert decodes == [outside]


def test_the_remembered_identities_stay_bounded(monkeypatch):
    monkeypatch.setattr(identity, "REMEMBERED_MAX", 3)
    with remember_identities():
        for seed in range(6):
            encode_png(field_image(seed, 16), None)
        assert len(identity._REMEMBERED.get().known) == 3


@pytest.mark.parametrize(("remembered_max", "pending_max"), [(3, 256), (64, 4), (2, 1)])
def test_noted_identities_completed_in_batches_equal_decoded_ones(
    monkeypatch, remembered_max, pending_max
):
    """Phashes of noted images are computed together when the first is asked for, or when
    `PENDING_MAX` wait: each equals the image's decoded identity, whatever was evicted or
    asked in between, and the images waiting stay bounded."""
    monkeypatch.setattr(identity, "REMEMBERED_MAX", remembered_max)
    monkeypatch.setattr(identity, "PENDING_MAX", pending_max)
    with remember_identities():
        remembered = identity._REMEMBERED.get()
        encoded = []
        for seed in range(12):
            encoded.append(encode_png(field_image(seed, 40 + seed), None))
            assert len(remembered.pending) < pending_max
            if seed % 5 == 4:
                assert identity_of(encoded[-2]) == hash_png(encoded[-2])
        for data in reversed(encoded):
            assert identity_of(data) == hash_png(data)


def test_the_phash_of_a_batch_is_the_phash_of_each_image():
    from healthgpt.data.decode.identity import _thumbnail, phash64, phashes

    images = [field_image(seed, side) for seed, side in enumerate((1, 7, 32, 33, 64, 100))]
    images += [Image.new("L", (64, 64), 9), Image.new("RGB", (31, 90), (3, 4, 5))]
    thumbnails = [_thumbnail(image) for image in images]
    assert phashes(thumbnails) == [phash64(image) for image in images]
    assert phashes(thumbnails[:3]) + phashes(thumbnails[3:]) == phashes(thumbnails)
    assert all(type(value) is int and 0 <= value < 1 << 64 for value in phashes(thumbnails))


def test_ingestion_decodes_images_a_reader_passed_through(tmp_path, toy_source, decodes):
    """The toy reader writes its own PNGs (no `encode_png`): their identity is decoded.
    (Every real reader encodes through `encode_png`: `test_every_source` checks none is.)"""
    (tmp_path / "src").mkdir()
    ingest(toy_source, tmp_path / "src", tmp_path / "out")
    rows = [
        row
        for path in sorted((tmp_path / "out" / "data").glob("*.parquet"))
        for row in pq.read_table(path, columns=["image", "image_hash"]).to_pylist()
    ]
    assert len(rows) == len(decodes) == 10
    for row in rows:
        data = row["image"]["bytes"]
        assert stored_identity(row["image_hash"], data) == hash_png(data)


def test_mixture_reads_stored_identities_and_builds_the_same_bytes(tmp_path):
    from healthgpt.data.mixture.build import build_mixture
    from healthgpt.data.mixture.config import sample_preset

    config = sample_preset(workers=1)
    built = {}
    for stored in (True, False):
        dirs = standard_sources(tmp_path / f"in-{stored}", identities=stored)
        out = tmp_path / f"out-{stored}"
        summary = build_mixture(dirs, out, config)
        files = sorted(p for p in out.rglob("*.parquet"))
        built[stored] = (
            summary.images_decoded,
            {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
        )
    (decoded_with, shards_with), (decoded_without, shards_without) = built[True], built[False]
    assert shards_with == shards_without
    # Only the super-resolution inputs are decoded when identities are stored.
    assert 0 < decoded_with < decoded_without


def test_a_stored_identity_is_trusted_only_for_its_own_well_formed_bytes():
    data, other = encode_png(IMAGES["L"], None), encode_png(IMAGES["RGB"], None)
    value = identity_value(data)
    assert stored_identity(value, data) == hash_png(data)
    assert stored_identity(value, other) is None  # copied to another image
    for bad in (
        {"key": "ab"},
        {"key": "zz" * 16},
        {"key": 123},
        {"phash": -1},
        {"phash": 1 << 64},
        {"phash": "0x1f"},
        {"method": "an older phash"},
        {"bytes_xxh128": None},
        {"bytes_xxh128": "0" * 32},
    ):
        assert stored_identity({**value, **bad}, data) is None, bad
    assert stored_identity(None, data) is None
    assert stored_identity("not a struct", data) is None
    # record/v2: bound by the sha256 of the bytes instead; checked the same way.
    v2 = {k: v for k, v in value.items() if k != "bytes_xxh128"}
    v2["bytes_sha256"] = hashlib.sha256(data).hexdigest()[:32]
    assert stored_identity(v2, data) == hash_png(data)
    assert stored_identity(v2, other) is None
    for bad in ({"bytes_sha256": None}, {"bytes_sha256": "0" * 32}, {"bytes_xxh128": None}):
        assert stored_identity({**v2, **bad}, data) is None, bad


def test_forged_identities_in_ingested_shards_change_nothing(tmp_path, monkeypatch):
    """An identity copied to other images (every image given one image's identity: all
    would be duplicates of each other) is not trusted: the build equals the honest one. (A
    writer that recomputes `bytes_xxh128` can forge anything; `check_no_leakage` hashes the
    written pixels itself.)"""
    from healthgpt.data.mixture.build import build_mixture
    from healthgpt.data.mixture.config import sample_preset
    from tests.data import mixture_helpers

    config = sample_preset(workers=1)
    reference = build_mixture(standard_sources(tmp_path / "honest"), tmp_path / "a", config)
    honest = mixture_helpers.add_identities
    forged_value = identity_value(encode_png(IMAGES["L"], None))

    def forge(record):
        record = honest(record)
        for column in ("image_hash", "target_image_hash"):
            if record[column]:
                record[column] = forged_value
        return record

    monkeypatch.setattr(mixture_helpers, "add_identities", forge)
    forged = standard_sources(tmp_path / "forged")
    monkeypatch.undo()
    result = build_mixture(forged, tmp_path / "b", config)
    assert result.removed == reference.removed and result.counts == reference.counts
    assert result.images_decoded > reference.images_decoded


@pytest.mark.parametrize("side", [1, 2, 3, 4])
def test_tiny_images_keep_distinct_phashes(side):
    from healthgpt.data.decode.identity import phash64

    images = [
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (side, side), np.uint8))
        for seed in range(40)
    ]
    distinct = len({phash64(image) for image in images})
    assert distinct >= (30 if side > 1 else 1)


def test_ingestions_from_before_the_identity_columns_pass_the_schema_check(tmp_path):
    from healthgpt.data.ingest.checks import check_schema
    from tests.data.mixture_helpers import standard_sources as sources

    with_identities = sources(tmp_path / "v2")["vqa_rad"]
    passed, details = check_schema(with_identities)
    assert passed and details["shards_without_identities"] == details["shards_of_record_v2"] == []
    # The same records written without the two columns, as a record/v1 ingestion was.
    without = tmp_path / "v1" / "vqa_rad"
    (without / "data").mkdir(parents=True)
    for path in sorted((with_identities / "data").glob("*.parquet")):
        table = pq.read_table(path).drop_columns(["image_hash", "target_image_hash"])
        pq.write_table(table, without / "data" / path.name)
    (without / "_manifest.json").write_text((with_identities / "_manifest.json").read_text())
    passed, details = check_schema(without)
    assert passed and details["shards_without_identities"] and not details["shards_of_record_v2"]
    # Anything else is still refused.
    pq.write_table(table.drop_columns(["meta"]), without / "data" / path.name)
    assert not check_schema(without)[0]


def test_ingestions_with_the_earlier_identity_layout_pass_the_schema_check(tmp_path):
    """Identities stored with a sha256 of the bytes (`bytes_sha256`, record/v2, the layout
    before `bytes_xxh128`) are still a valid ingestion."""
    from healthgpt.data.ingest.checks import check_schema
    from tests.data.mixture_helpers import standard_sources as sources

    dataset = sources(tmp_path / "in")["vqa_rad"]
    for path in sorted((dataset / "data").glob("*.parquet")):
        table = pq.read_table(path)
        for column in ("image_hash", "target_image_hash"):
            earlier = pa.struct(
                [("bytes_sha256" if f.name == "bytes_xxh128" else f.name, f.type)
                 for f in table.schema.field(column).type]
            )  # fmt: skip
            position = table.column_names.index(column)
            table = table.set_column(position, column, table.column(column).cast(earlier))
        pq.write_table(table, path)
    passed, details = check_schema(dataset)
    assert passed and details["shards_of_record_v2"] and not details["shards_without_identities"]
