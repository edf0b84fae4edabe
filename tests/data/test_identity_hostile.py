"""Hostile inputs for image identities (xxh3 pixel key, noted at encoding) and for the checks
around them: the planted-PHI scan's rule for all-digit secrets and the dataset card's
description of the exact-duplicate key."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from healthgpt.data.decode.identity import hash_png, identity_of, remember_identities
from healthgpt.data.decode.imaging import encode_png
from healthgpt.data.mixture.card import _how_built
from healthgpt.data.mixture.config import sample_preset
from healthgpt.data.schema import HASH_COLUMNS
from tests.data.mixture_helpers import standard_sources
from tests.data.test_planted_phi import assert_no_secret, png_chunks


@pytest.mark.parametrize(
    "text",
    [
        "mrn1234567 seen today",  # an id glued to its label
        "pid:1234567a",  # an id with a check letter
        "acquired 19700101083000",  # the birth date as a DICOM DT value
        "dob 19320105",  # the year 1932 as a DICOM DA value
        "born 1932y ago",  # a year glued to a unit
    ],
)
def test_the_phi_scan_finds_a_digit_secret_glued_to_other_characters(tmp_path, text):
    """An all-digit secret next to letters or digits is still a leak (an id after its label,
    a DICOM DA or DT value): the scan matches secrets anywhere, not as tokens."""
    pq.write_table(pa.table({"text": [text]}), tmp_path / "a.parquet")
    with pytest.raises(AssertionError, match="reached an output"):
        assert_no_secret(tmp_path)


def test_the_card_does_not_call_the_exact_duplicate_key_a_sha256():
    """The published card describes the build: exact duplicates share the 128-bit xxh3 of
    their decoded pixels now (`identity.METHOD`), not their sha256."""
    card = _how_built(sample_preset())
    assert "sha256 of their decoded pixels" not in card


def _modes() -> dict[str, Image.Image]:
    rng = np.random.default_rng(5)
    rgb = Image.fromarray(rng.integers(0, 255, (9, 13, 3), dtype=np.uint8))
    images = {mode: rgb.convert(mode) for mode in ("1", "L", "LA", "P", "RGBA", "CMYK", "YCbCr")}
    images["P with transparency"] = rgb.convert("P")
    images["P with transparency"].info["transparency"] = 3
    images["RGB with metadata"] = rgb.copy()
    images["RGB with metadata"].info.update(
        icc_profile=b"a profile", exif=b"Exif\0\0MM", dpi=(300, 300), transparency=(1, 2, 3)
    )
    images["I"] = Image.fromarray(rng.integers(-(2**31), 2**31 - 1, (9, 13), dtype=np.int32))
    images["I;16"] = Image.fromarray(rng.integers(0, 65535, (9, 13), dtype=np.uint16))
    images["F"] = Image.fromarray(rng.normal(size=(9, 13)).astype(np.float32))
    images["1x1"] = rgb.crop((0, 0, 1, 1))
    images["1xN"] = rgb.convert("L").crop((0, 0, 13, 1))
    return images


ODD_ARRAYS = {
    f"{dtype} {shape}": np.random.default_rng(6).integers(0, 100, shape).astype(dtype)
    for dtype in ("bool", "int8", ">u2", "int64", "float16", ">f8")
    for shape in ((5, 6), (5, 6, 3))
}


@pytest.mark.parametrize("name", [*_modes(), *ODD_ARRAYS])
@pytest.mark.parametrize("size", [None, 8])
def test_every_mode_notes_the_decoded_identity_and_writes_only_pixels(name, size):
    image = _modes().get(name, ODD_ARRAYS.get(name))
    with remember_identities():
        data = encode_png(image, size)
        noted = identity_of(data)
    assert noted == hash_png(data)
    assert {kind for kind, _ in png_chunks(data)} == {"IHDR", "IDAT", "IEND"}


def _old_pixel_key(data: bytes) -> str:
    """The pixel key of method "sha256-pixels/dct64-v1", which earlier ingestions stored."""
    image = Image.open(io.BytesIO(data))
    image.load()
    digest = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:32]


def _struct(fields: dict[str, pa.DataType]):
    return lambda values: pa.array(values, pa.struct(list(fields.items())))


_NOW = {"key": pa.string(), "phash": pa.uint64(), "bytes_xxh128": pa.string()}
_NOW["method"] = pa.string()
# The layout before: a sha256 of the bytes where there is now an xxh3.
_BEFORE = {"key": pa.string(), "phash": pa.uint64(), "bytes_sha256": pa.string()}
_BEFORE["method"] = pa.string()


def _before(image: dict, value: dict, **changes) -> dict:
    digest = hashlib.sha256(image["bytes"]).hexdigest()[:32]
    return {"key": value["key"], "phash": value["phash"], "bytes_sha256": digest,
            "method": value["method"], **changes}  # fmt: skip


def _each(rewrite):
    return lambda images, values: [v and rewrite(i, v) for i, v in zip(images, values, strict=True)]


def _shifted(values: list) -> list:
    return values[1:] + values[:1]


# Each rewrites a column's stored identities (given its images) as an earlier or hostile
# writer would have stored them.
HOSTILE = {
    "earlier method": _each(
        lambda image, value: _before(
            image, value, key=_old_pixel_key(image["bytes"]), method="sha256-pixels/dct64-v1"
        )
    ),
    "earlier layout": _each(_before),
    "earlier layout, identity of the next image": lambda images, values: _shifted(
        _each(_before)(images, values)
    ),
    "earlier layout, digest of no image": _each(
        lambda image, value: {**_before(image, value), "bytes_sha256": "0" * 32}
    ),
    "wrong types": _each(lambda image, value: {**value, "key": 12345, "phash": -1}),
    "null fields": _each(lambda image, value: dict.fromkeys(value)),
    "identity of the next image": lambda images, values: _shifted(values),
}
HOSTILE_TYPES = {
    "earlier method": _struct(_BEFORE),
    "earlier layout": _struct(_BEFORE),
    "earlier layout, identity of the next image": _struct(_BEFORE),
    "earlier layout, digest of no image": _struct(_BEFORE),
    "wrong types": _struct({**_NOW, "key": pa.int64(), "phash": pa.int64()}),
    "null fields": _struct(_NOW),
    "identity of the next image": _struct(_NOW),
}


def _rewrite_identities(dirs: dict[str, Path], name: str) -> None:
    for directory in dirs.values():
        for path in sorted((directory / "data").glob("*.parquet")):
            table = pq.read_table(path)
            for column, hash_column in HASH_COLUMNS.items():
                images = table.column(column).to_pylist()
                values = HOSTILE[name](images, table.column(hash_column).to_pylist())
                position = table.column_names.index(hash_column)
                table = table.set_column(position, hash_column, HOSTILE_TYPES[name](values))
            pq.write_table(table, path)


def _built(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def honest_build(tmp_path_factory) -> dict[str, str]:
    from healthgpt.data.mixture.build import build_mixture

    root = tmp_path_factory.mktemp("honest")
    build_mixture(standard_sources(root / "in"), root / "out", sample_preset(workers=1))
    return _built(root / "out")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_or_earlier_stored_identities_build_the_honest_mixture(
    tmp_path, name, honest_build
):
    from healthgpt.data.mixture.build import build_mixture

    dirs = standard_sources(tmp_path / "in")
    _rewrite_identities(dirs, name)
    build_mixture(dirs, tmp_path / "out", sample_preset(workers=1))
    assert _built(tmp_path / "out") == honest_build


def test_identities_of_record_v2_are_used_without_decoding(tmp_path):
    """An ingestion written before `bytes_xxh128` (identities bound by a sha256) keeps the
    mixture's fast path: it decodes no more images than for a fresh ingestion."""
    from healthgpt.data.mixture.build import build_mixture

    fresh = build_mixture(
        standard_sources(tmp_path / "a"), tmp_path / "oa", sample_preset(workers=1)
    )
    dirs = standard_sources(tmp_path / "b")
    _rewrite_identities(dirs, "earlier layout")
    earlier = build_mixture(dirs, tmp_path / "ob", sample_preset(workers=1))
    assert earlier.images_decoded == fresh.images_decoded
    assert earlier.counts == fresh.counts
    _rewrite_identities(dirs, "earlier layout, digest of no image")
    untrusted = build_mixture(dirs, tmp_path / "oc", sample_preset(workers=1))
    assert untrusted.images_decoded > fresh.images_decoded


def test_palette_images_with_the_same_indices_and_other_colours_are_not_one_image():
    """A reader may pass a palette PNG through unchanged: its pixel bytes are indices, so the
    palette is part of the exact key."""
    indices = np.arange(64, dtype=np.uint8).reshape(8, 8) % 4
    pictures = []
    for palette in ([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255], [9] * 12):
        image = Image.fromarray(indices, "P")
        image.putpalette(palette)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        pictures.append(hash_png(buffer.getvalue()))
    assert pictures[0].key != pictures[1].key
