"""PathVQA reader: the authors' pickle layout, the Parquet copy, and the pickle guard."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import pytest
import yaml

from healthgpt.data.samples import pathvqa
from healthgpt.data.sources import BadInput, LayoutError
from healthgpt.data.sources.pathvqa import (
    PathVqaReader,
    UnsafePickleError,
    load_restricted_pickle,
)
from tests.data.outputs import quarantine, records, run

MANIFEST = Path(__file__).resolve().parents[2] / "data_manifests" / "pathvqa.yaml"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pathvqa")
    pathvqa.build(root)
    return root


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("pathvqa_out")
    return run("pathvqa", sample, out), out


class Exploit:
    """Unpickling this runs a shell command, if the unpickler lets it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def qa_pairs(rows: list[dict]) -> Counter:
    return Counter((r["split"], r["question"], r["answer"]) for r in rows)


def test_pickle_layout_counts_match_the_manifest(ingested):
    summary, out = ingested
    expected = yaml.safe_load(MANIFEST.read_text())["expected_counts"]["sample"]
    assert (summary.items, summary.quarantined) == (expected["items"], expected["quarantined"])
    assert expected["records_min"] <= summary.records <= expected["records_max"]
    rows = records(out)
    assert {r["modality"] for r in rows} == {"Pathology"}
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    for r in rows:
        assert r["answer_type"] == ("closed" if r["answer"] in ("yes", "no") else "open")
    assert {r["orig_path"] for r in rows if r["split"] == "validation"} == {
        "pvqa/images/val/val_0000.jpg"
    }


def test_bad_pickle_rows_are_quarantined(ingested):
    _, out = ingested
    reasons = sorted(q["reason"].split(":")[0] for q in quarantine(out))
    assert reasons == [
        "image file is empty (0 bytes)",
        "image file missing",
        "undecodable image train_9992.jpg",
    ]


def test_parquet_layout_gives_the_same_records(ingested, tmp_path):
    _, pkl_out = ingested
    root = tmp_path / "hf"
    pathvqa.build_parquet(root)
    assert PathVqaReader(root).layout == "parquet"
    summary = run("pathvqa", root, tmp_path / "out")
    assert (summary.records, summary.quarantined) == (72, 3)
    assert qa_pairs(records(tmp_path / "out")) == qa_pairs(records(pkl_out))
    reasons = sorted(q["reason"] for q in quarantine(tmp_path / "out"))
    assert reasons[0].startswith("row has no image bytes")
    assert reasons[1].startswith("row has no image bytes")  # empty bytes
    assert reasons[2].startswith("undecodable image")


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([{"image": "x", "q": Exploit(marker)}]))
    with pytest.raises(UnsafePickleError, match=r"refused to load (posix|nt)\.system"):
        load_restricted_pickle(path)
    assert not marker.exists()


def test_restricted_unpickler_loads_plain_data(tmp_path):
    rows = [{"image": "train_0000", "question": "q?", "answer": "yes", "n": 1, "f": 0.5}]
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(rows, protocol=2))
    assert load_restricted_pickle(path) == rows


def test_malicious_split_is_quarantined_and_other_splits_still_ingest(sample, tmp_path):
    import shutil

    root = tmp_path / "src"
    shutil.copytree(sample, root)
    marker = tmp_path / "pwned"
    evil = root / "pvqa" / "qas" / "test" / "test_qa.pkl"
    evil.write_bytes(pickle.dumps([{"image": "test_0000", "question": Exploit(marker)}]))
    summary = run("pathvqa", root, tmp_path / "out")
    assert not marker.exists()
    assert "test" not in summary.by_split and summary.by_split["train"] > 0
    rejected = [q for q in quarantine(tmp_path / "out") if q["item"].endswith("test_qa.pkl")]
    assert len(rejected) == 1 and rejected[0]["reason"].startswith("unsafe pickle: refused")


def test_wrong_layout_names_both_expected_layouts(tmp_path):
    (tmp_path / "pvqa" / "images").mkdir(parents=True)
    with pytest.raises(LayoutError) as error:
        PathVqaReader(tmp_path).validate_layout()
    assert "_qa.pkl" in str(error.value) and ".parquet" in str(error.value)


def _suffix_loop(reader: PathVqaReader, split: str, image: str) -> Path:
    """The rule `_image_path` follows: the first name + suffix that is a file."""
    folder = reader.pvqa / "images" / split
    for suffix in ("", ".jpg", ".jpeg", ".png"):
        path = reader.safe_path(image + suffix, folder)
        if path.is_file():
            return path
    raise BadInput(f"image file missing: {image}")


def test_image_paths_read_from_the_folder_listing_follow_the_suffix_rule(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "secret.jpg"
    folder = root / "pvqa" / "images" / "train"
    folder.mkdir(parents=True)
    (root / "pvqa" / "qas" / "train").mkdir(parents=True)
    outside.write_bytes(b"secret")
    for name in ("a.jpg", "b", "b.jpg", "c.png", "dir.jpg", "d\udcff.jpg"):
        (folder / name).write_bytes(b"x")
    (folder / "dir").mkdir()
    (folder / "inside.jpg").symlink_to(folder / "a.jpg")
    (folder / "link.jpg").symlink_to(outside)
    (folder / "link").symlink_to(outside)
    reader = PathVqaReader(root)
    names = ["a", "b", "c", "dir", "d\udcff", "inside", "link", "missing"]
    names += ["..", "../../../x", "x" * 300]  # odd names go through `confine`
    for image in names:
        try:
            expected: Path | str = _suffix_loop(reader, "train", image)
        except BadInput as exc:
            expected = str(exc)
        try:
            found: Path | str = reader._image_path("train", image)
        except BadInput as exc:
            found = str(exc)
        assert found == expected, image
    assert reader._image_path("train", "b").name == "b"  # no suffix comes first


def test_a_relative_root_reads_the_same_records(sample, ingested, tmp_path, monkeypatch):
    monkeypatch.chdir(sample.parent)
    summary = run("pathvqa", Path(sample.name), tmp_path / "out")
    assert (summary.records, summary.quarantined) == (ingested[0].records, ingested[0].quarantined)
    assert records(tmp_path / "out") == records(ingested[1])


def test_a_chunked_run_encodes_only_the_images_of_its_chunk(sample, tmp_path, monkeypatch):
    encoded: list[str] = []
    encode = PathVqaReader._encode_file

    def recording(self, path):
        encoded.append(path.relative_to(self.confinement.root).as_posix())
        return encode(self, path)

    monkeypatch.setattr(PathVqaReader, "_encode_file", recording)
    by_chunk = []
    for index in (0, 1):
        encoded.clear()
        run("pathvqa", sample, tmp_path / str(index), chunk=(index, 2))
        kept = [r["orig_path"] for r in records(tmp_path / str(index))]
        assert kept and set(kept) <= set(encoded)
        assert sorted(set(kept)) == sorted(e for e in encoded if e in kept)  # once each
        by_chunk.append(set(encoded))
    assert not by_chunk[0] & by_chunk[1]


def test_each_image_is_encoded_once_and_held_only_until_its_last_question(tmp_path, monkeypatch):
    """Questions about one image spread over many batches of rows: the image is encoded
    once, and the reader's cache holds no image once its last question is built."""
    from healthgpt.data.sources import pathvqa as reader_module
    from healthgpt.data.sources.png_cache import PngCache

    root = tmp_path / "src"
    pathvqa.build(root)
    qa = root / "pvqa" / "qas" / "train" / "train_qa.pkl"
    rows = [r for r in pickle.loads(qa.read_bytes()) if isinstance(r, dict) and r.get("image")]
    first = rows[0]["image"]
    asked = [dict(rows[0], question=f"Question {i} about the first image?") for i in range(5)]
    mixed = []
    for index, row in enumerate(rows):
        mixed.append(row)
        if index % 10 == 0 and asked:
            mixed.append(asked.pop())
    assert not asked and len(mixed) > 3 * reader_module.BATCH_ROWS
    qa.write_bytes(pickle.dumps(mixed))

    encoded: Counter = Counter()
    caches: list[PngCache] = []
    encode, init = PathVqaReader._encode_file, PngCache.__init__

    def recording(self, path):
        encoded[path.name] += 1
        return encode(self, path)

    def keep(self, *args, **kwargs):
        init(self, *args, **kwargs)
        caches.append(self)

    monkeypatch.setattr(PathVqaReader, "_encode_file", recording)
    monkeypatch.setattr(PngCache, "__init__", keep)
    summary = run("pathvqa", root, tmp_path / "out")
    got = records(tmp_path / "out")
    assert summary.records == len(got)
    assert sum(r["question"].startswith("Question ") for r in got) == 5
    kept = {Path(r["orig_path"]).name for r in got}
    assert any(name.startswith(first) for name in kept)
    assert kept and {encoded[name] for name in kept} == {1}  # (a broken one is tried twice)
    assert caches and all(not c._items for c in caches)
    left = {Path(key).name for c in caches for key in c.uses}
    assert not left & kept  # counts left only for images that never decoded


def test_a_row_naming_its_image_with_spaces_is_in_the_chunk_of_the_image_file(tmp_path):
    """The chunk of a row is the chunk of the image file it names, however the name is
    padded: a changed image then re-ingests (its chunk's fingerprint changes) every row
    about it, and the image is encoded in one chunk only."""
    from healthgpt.data.sources.chunks import chunk_of

    root = tmp_path / "src"
    pathvqa.build(root)
    qa = root / "pvqa" / "qas" / "train" / "train_qa.pkl"
    rows = [r for r in pickle.loads(qa.read_bytes()) if isinstance(r, dict) and r.get("image")]
    name = rows[0]["image"]
    padded = [dict(rows[0], image=f"  {name} ", question=f"Padded question {i}?") for i in range(3)]
    qa.write_bytes(pickle.dumps(rows + padded))
    reader = PathVqaReader(root)
    key = reader.chunk_key(f"pvqa/images/train/{name}.jpg")
    n_chunks = 4
    expected = chunk_of(key, n_chunks)
    for index in range(n_chunks):
        out = tmp_path / f"c{index}"
        run("pathvqa", root, out, chunk=(index, n_chunks))
        got = [r for r in records(out) if r["question"].startswith("Padded question")]
        assert len(got) == (3 if index == expected else 0)
