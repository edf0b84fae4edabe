"""LLaVA-style JSON reader, and the streaming JSON helper it relies on."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import yaml

from healthgpt.data.json_rows import JsonRowError, iter_json_rows
from healthgpt.data.samples import catalog, llava_json
from healthgpt.data.samples.llava_sets import PLANTED_PHI
from healthgpt.data.sources import LayoutError
from healthgpt.data.sources.llava_json import LlavaJsonReader, scrub_lines
from tests.data.outputs import assert_no_phi, meta, quarantine, records, run

MANIFEST = Path(__file__).resolve().parents[2] / "data_manifests" / "llava_json.yaml"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("llava")
    llava_json.build(root)
    return root


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("llava_out")
    return run("llava_json", sample, out), out


def by_sample_id(out: Path, root: Path) -> dict[str, dict]:
    """Records by the `id` of their source row (records carry its pseudonym)."""
    reader = LlavaJsonReader(root)
    rows = json.loads((root / "llava_med_instruct.json").read_text())
    rows += [
        json.loads(line) for line in (root / "pubmedvision.jsonl").read_text().splitlines()[:3]
    ]
    rows += [
        json.loads(line) for line in (root / "pubmedvision.jsonl").read_text().splitlines()[4:]
    ]
    shown = {reader.shown_id(row): row["id"] for row in rows}
    return {shown[meta(r)["sample_id"]]: r for r in records(out)}


def test_counts_match_the_manifest(ingested):
    summary, _ = ingested
    expected = yaml.safe_load(MANIFEST.read_text())["expected_counts"]["sample"]
    assert (summary.items, summary.quarantined) == (expected["items"], expected["quarantined"])
    assert expected["records_min"] <= summary.records <= expected["records_max"]
    assert summary.by_kind == {"conversation": summary.records}


def test_bad_samples_are_quarantined_with_reasons(sample, ingested):
    _, out = ingested
    reasons = {q["item"]: q["reason"] for q in quarantine(out)}
    assert len(reasons) == 8
    text = "\n".join(reasons.values())
    reader = LlavaJsonReader(sample)
    # file names in reasons are pseudonyms: the reader is for hospital data
    for name in ("../../etc/passwd", "/etc/passwd"):
        assert f"path {reader.shown_name(name)!r} points outside the source root" in text
    assert f"image file missing: {reader.shown_name('does_not_exist.jpg')}" in text
    assert "image file is empty (0 bytes)" in text
    assert f"undecodable image {reader.shown_name('truncated.jpg')}" in text
    assert "sample has no conversations" in text
    listing = reader.shown_name("pubmedvision.jsonl")
    assert reasons[f"{listing}#3"].startswith("unparseable JSON: invalid JSON on line 4")


def test_no_planted_phi_in_ids_or_file_names(ingested):
    _, out = ingested
    assert_no_phi(out, PLANTED_PHI)


def test_conversations_are_scrubbed_line_by_line_keeping_numbers(sample, ingested):
    _, out = ingested
    source = json.loads((sample / "llava_med_instruct.json").read_text())[0]
    record = by_sample_id(out, sample)[source["id"]]
    assert record["conversations"] == [
        {"from": t["from"], "value": scrub_lines(t["value"])} for t in source["conversations"]
    ]
    assert record["conversations"][0]["value"].startswith("<image>\n")
    assert record["orig_path"] == LlavaJsonReader(sample).shown_name(f"images/{source['image']}")
    # measurements stay; what names a person goes
    assert scrub_lines("<image>\nA 3.5 cm mass, 12 mm wall, 120 kVp.") == (
        "<image>\nA 3.5 cm mass, 12 mm wall, 120 kVp."
    )
    assert "Quimby" not in scrub_lines("Seen by Dr. Quimby on 03/14/2019.")


def test_multi_image_samples_keep_the_first_image_and_count(sample, ingested):
    _, out = ingested
    got = by_sample_id(out, sample)
    multi = got["pmv-multi-ct_head"]
    assert meta(multi)["n_images"] == 2
    assert multi["image"]["bytes"] == got["pmv-ct_head"]["image"]["bytes"]
    assert multi["image"]["bytes"] != got["pmv-multi-mr_head"]["image"]["bytes"]
    assert meta(got["pmv-ct_head"])["n_images"] == 1


def test_modality_from_labels_else_other_and_split_field(sample, ingested):
    _, out = ingested
    got = by_sample_id(out, sample)
    for image in catalog.real_images():
        assert got[f"pmv-{image.name}"]["modality"] == image.modality
        assert got[f"{image.name}-0"]["modality"] == "Other"  # LLaVA-Med has no label
    assert got["pmv-ct_head"]["body_part"] == "head"
    splits = {r["split"] for r in got.values()}
    assert splits == {"train", "test"}


def test_image_root_option(tmp_path):
    root = tmp_path / "src"
    catalog.write_jpeg(catalog.get("ct_head"), root / "pics" / "sub" / "a.jpg", max_side=64)
    turns = [{"from": "human", "value": "<image>\nhi"}]
    sample = {"id": 1, "image": "sub/a.jpg", "conversations": turns}
    escape = {**sample, "id": 2, "image": "../../../etc/hostname"}
    (root / "data.jsonl").write_text(json.dumps(sample) + "\n" + json.dumps(escape) + "\n")
    summary = run("llava_json", root, tmp_path / "out", extra={"image_root": "pics"})
    assert (summary.records, summary.quarantined) == (1, 1)
    shown = LlavaJsonReader(root).shown_name("pics/sub/a.jpg")
    assert records(tmp_path / "out")[0]["orig_path"] == shown
    assert "outside the source root" in quarantine(tmp_path / "out")[0]["reason"]
    for wrong in ("missing", "../.."):
        with pytest.raises(LayoutError, match="image_root"):
            LlavaJsonReader(root, _options(image_root=wrong)).validate_layout()


def _options(**extra):
    from healthgpt.data.sources import ReaderOptions

    return ReaderOptions(extra=extra)


def test_wrong_layout_names_the_expected_one(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(LayoutError, match=r"\*\.json") as error:
        LlavaJsonReader(tmp_path).validate_layout()
    assert "conversations" in str(error.value)


def test_shards_load_with_hf_datasets(ingested, tmp_path):
    summary, out = ingested
    loaded = datasets.load_dataset(
        "parquet", data_dir=str(out / "data"), cache_dir=str(tmp_path / "hf")
    )
    assert set(loaded) == {"train", "test"}
    row = loaded["train"][0]
    assert row["conversations"][0]["from"] == "human"
    assert row["image"].mode in ("L", "RGB")


@pytest.mark.parametrize("chunk", [3, 64, 1 << 20])
def test_json_array_streams_in_any_chunk_size(tmp_path, chunk):
    rows = [{"id": i, "text": "é" * i, "n": 10**i} for i in range(12)] + [123456, "s", None]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    assert list(iter_json_rows(path, chunk_chars=chunk)) == rows


def test_json_errors_are_yielded_after_the_good_rows(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(json.dumps([{"a": 1}, {"b": 2}, {"c": 3}])[:-8])
    got = list(iter_json_rows(path, chunk_chars=4))
    assert got[:2] == [{"a": 1}, {"b": 2}]
    assert isinstance(got[2], JsonRowError) and len(got) == 3
    (tmp_path / "obj.json").write_text('{"not": "a list"}')
    (only,) = iter_json_rows(tmp_path / "obj.json")
    assert "expected a JSON array" in str(only)
    (tmp_path / "lines.jsonl").write_text('{"a": 1}\n\n{oops\n{"b": 2}\n')
    got = list(iter_json_rows(tmp_path / "lines.jsonl"))
    assert got[0] == {"a": 1} and got[2] == {"b": 2}
    assert "line 3" in str(got[1])
