"""Image identities computed once, at encoding: the same as decoding the bytes, stored by
ingestion, and read by the mixture instead of decoding every image again."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from healthgpt.data.decode import identity
from healthgpt.data.decode.identity import hash_png, identity_of, remember_identities
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
        assert len(identity._REMEMBERED.get()) == 3


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
        assert row["image_hash"] == hash_png(row["image"]["bytes"]).to_value()


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
