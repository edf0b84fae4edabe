"""The readers of the paper's LLaVA-style datasets (LLaVA-558k, PubMedVision, LLaVA-Med and the
released VL-Health files), on their bundled samples: counts as the registry files state, bad
rows quarantined with reasons, planted PHI scrubbed, and each layout's quirks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from healthgpt.data.samples import build_sample_source, catalog
from healthgpt.data.samples.llava_sets import PLANTED_PHI
from healthgpt.data.sources import LayoutError, ReaderOptions, reader_class
from healthgpt.data.sources.base import BadInput
from healthgpt.data.sources.vl_health_generation import normalize_task, task_from_instruction
from tests.data.outputs import assert_no_phi, manifest_sample_counts, meta, quarantine, records
from tests.data.outputs import run as ingest_run

DATASETS = (
    "llava_558k",
    "pubmedvision",
    "llava_med",
    "vl_health_alignment",
    "vl_health_reconstruction",
    "vl_health_comprehension",
    "vl_health_generation",
)
MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"
# Quarantine reasons every sample's bad rows must produce.
BAD_ROW_REASONS = (
    "path '../../etc/passwd' points outside the source root",
    "path '/etc/passwd' points outside the source root",
    "image file missing: file-",  # the missing file's name names a patient: a pseudonym
    "image file is truncated",
    "text is not valid UTF-8 (byte 0xff",
    "unparseable JSON: invalid JSON at char",
)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """Each dataset's sample, built and ingested once for the module: name -> (summary, out)."""
    base = tmp_path_factory.mktemp("paper_sets")
    done = {}
    for name in DATASETS:
        root = build_sample_source(name, base / "sources")
        done[name] = (ingest_run(name, root, base / "out" / name), base / "out" / name)
    return done


def by_sample_id(out: Path) -> dict[str, dict]:
    return {meta(r)["sample_id"]: r for r in records(out)}


@pytest.mark.parametrize("name", DATASETS)
def test_counts_reasons_and_phi(name, ingested):
    summary, out = ingested[name]
    expected = manifest_sample_counts(name)
    assert (summary.items, summary.quarantined) == (expected["items"], expected["quarantined"])
    assert expected["records_min"] <= summary.records <= expected["records_max"]
    reasons = "\n".join(q["reason"] for q in quarantine(out))
    for reason in BAD_ROW_REASONS:
        assert reason in reasons, f"{name}: no quarantine row says {reason!r}"
    assert_no_phi(out, PLANTED_PHI)
    scrubbed = [t["value"] for r in records(out) for t in r["conversations"] or []]
    assert any("Dr. ___" in value for value in scrubbed), "the planted row was not kept"


@pytest.mark.parametrize("name", DATASETS)
def test_registry_file_names_its_reader_and_the_paper(name):
    spec = yaml.safe_load((MANIFESTS / f"{name}.yaml").read_text())
    lines = (MANIFESTS / f"{name}.yaml").read_text().splitlines()
    assert lines[1] == f"source: {name}" and lines[2] == f"reader: {name}"
    assert reader_class(spec["reader"]).name == name
    assert list(spec)[-1] == "paper" and spec["paper"]["family"] in ("comprehension", "generation")
    ReaderOptions(**spec.get("options", {}))  # the options are ReaderOptions fields


def test_paper_totals_are_recorded():
    totals = {
        yaml.safe_load((MANIFESTS / f"{n}.yaml").read_text())["paper"]["samples"]
        for n in ("vl_health_comprehension", "vl_health_generation")
    }
    assert totals == {765802, 783045}


def test_llava_558k_keeps_the_image_token_where_it_was_and_the_folder_paths(ingested):
    _, out = ingested["llava_558k"]
    got = by_sample_id(out)
    assert meta(got["004539375"])["image_token"] == "start"
    assert meta(got["004540486"])["image_token"] == "end"
    assert got["004540486"]["conversations"][0]["value"].endswith("\n<image>")
    assert got["004539375"]["conversations"][0]["value"].startswith("<image>\n")
    assert got["004539375"]["orig_path"] == "00453/004539375.jpg"
    assert {r["modality"] for r in got.values()} == {"Other"}


def test_llava_558k_reads_only_the_conversation_file(ingested):
    summary, out = ingested["llava_558k"]
    files = {meta(r)["file"] for r in records(out)}
    assert files == {"blip_laion_cc_sbu_558k.json"}  # not the _meta.json beside it


def test_pubmedvision_multi_image_rows_are_skipped_by_default_and_counted(ingested, tmp_path):
    summary, out = ingested["pubmedvision"]
    assert summary.skipped == {"multi_image": 2}
    assert all(meta(r)["n_images"] == 1 for r in records(out))
    root = build_sample_source("pubmedvision", tmp_path / "src")
    kept = ingest_run("pubmedvision", root, tmp_path / "out", extra={"multi_image": "first"})
    assert (kept.records, kept.skipped) == (summary.records + 2, {})
    multi = by_sample_id(tmp_path / "out")["pmv-multi-ct_head"]
    assert meta(multi)["n_images"] == 2
    assert multi["image"]["bytes"] == by_sample_id(out)["pmv-align-ct_head"]["image"]["bytes"]
    with pytest.raises(ValueError, match="multi_image"):
        ingest_run("pubmedvision", root, tmp_path / "bad", extra={"multi_image": "all"})


def test_pubmedvision_labels_give_modality_and_body_part(ingested):
    _, out = ingested["pubmedvision"]
    got = by_sample_id(out)
    for name in ("ct_head", "mr_head", "cr_chest_pa", "pathology_ihc"):
        image = catalog.get(name)
        assert got[f"pmv-it-{name}"]["modality"] == image.modality
    assert got["pmv-it-ct_head"]["body_part"] == "head"
    assert meta(got["pmv-it-ct_head"])["modality_label"] == "Computed Tomography"


def test_llava_med_modality_comes_from_the_domain_flags(ingested):
    _, out = ingested["llava_med"]
    got = by_sample_id(out)
    expected = {
        "31000001_F1": ("CT", ["ct_scan"]),
        "31000002_F2": ("MRI", ["mri"]),
        "31000003_F1": ("X-Ray", ["chest_xray"]),
        "31000004_F3": ("Pathology", ["histology"]),
        "31000005_F1": ("Other", None),
    }
    for pair_id, (modality, domain) in expected.items():
        assert (got[pair_id]["modality"], meta(got[pair_id]).get("domain")) == (modality, domain)
        assert got[pair_id]["orig_path"] == f"images/{pair_id}.jpg"


def test_alignment_rows_split_by_id_into_their_origins(ingested):
    _, out = ingested["vl_health_alignment"]
    got = by_sample_id(out)
    origins = {sample_id: meta(r)["origin"] for sample_id, r in got.items()}
    assert sorted(k for k, v in origins.items() if v == "pubmedvision") == [
        "pmc-ct_pancreas",
        "pmc-mr_head",
        "pmc-nm_whole_body",
        "pmc-us_echo",
    ]
    assert sum(v == "llava_558k" for v in origins.values()) == 5
    assert got["004539375"]["modality"] == "Other"
    assert got["pmc-mr_head"]["modality"] == "MRI"
    assert got["pmc-mr_head"]["orig_path"] == "pubmedvision/images/mr_head.jpg"
    reasons = [q["reason"] for q in quarantine(out)]
    assert "row has no id to tell its origin" in reasons


def test_alignment_origin_rule_and_absolute_image_prefix_are_options(tmp_path):
    root = tmp_path / "src"
    catalog.write_jpeg(catalog.get("ct_head"), root / "pics" / "a.jpg", max_side=64)
    turns = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A CT."}]
    rows = [
        {"id": "L-1", "image": "/mnt/authors/data/pics/a.jpg", "conversations": turns},
        {"id": "P-1", "image": "/mnt/authors/data/pics/a.jpg", "conversations": turns},
        {"id": "X-1", "image": "/mnt/authors/data/pics/a.jpg", "conversations": turns},
    ]
    (root / "train_data.json").write_text(json.dumps(rows))
    extra = {
        "image_prefix": "/mnt/authors/data/",
        "origin_patterns": {"llava_558k": "L-*", "pubmedvision": "P-*"},
    }
    summary = ingest_run("vl_health_alignment", root, tmp_path / "out", extra=extra)
    assert (summary.records, summary.quarantined) == (2, 1)
    assert {meta(r)["origin"] for r in records(tmp_path / "out")} == {"llava_558k", "pubmedvision"}
    assert quarantine(tmp_path / "out")[0]["reason"] == "row id matches no origin pattern"
    plain = list(reader_class("vl_health_alignment")(root).items())
    assert [o.quarantined.reason for o in plain] == [
        "path '/mnt/authors/data/pics/a.jpg' points outside the source root"
    ] * 3  # absolute paths without the prefix option


def test_generation_rows_become_pairs_images_and_reports_with_their_task(ingested):
    _, out = ingested["vl_health_generation"]
    got = by_sample_id(out)
    shape = {
        sample_id: (r["kind"], r["task"], r["modality"], r["target_modality"], meta(r)["task_from"])
        for sample_id, r in got.items()
    }
    assert shape == {
        "gen-ct2mri": ("pair", "ct_to_mri", "CT", "MRI", "field"),
        "gen-mri2ct": ("pair", "mri_to_ct", "MRI", "CT", "instruction"),
        "gen-sr": ("pair", "super_resolution", "MRI", "MRI", "field"),
        "gen-recon": ("image", "reconstruction", "Other", None, "field"),
        "gen-recon-no-output": ("image", "reconstruction", "Other", None, "instruction"),
        "gen-t2i": ("report", "text_to_image", "X-Ray", None, "instruction"),
    }
    pair = got["gen-ct2mri"]
    assert pair["image"]["bytes"] != pair["target_image"]["bytes"]
    assert got["gen-mri2ct"]["image"]["bytes"] == pair["target_image"]["bytes"]
    assert got["gen-mri2ct"]["target_image"]["bytes"] == pair["image"]["bytes"]
    assert got["gen-sr"]["image"]["bytes"] != got["gen-sr"]["target_image"]["bytes"]
    report = got["gen-t2i"]
    assert report["text"].startswith("Generate a chest X-ray image that matches this report:")
    assert "IMPRESSION: No acute cardiopulmonary process." in report["text"]
    assert report["target_image"] is None and report["image"]["bytes"]
    assert got["gen-recon"]["target_image"] is None
    reasons = [q["reason"] for q in quarantine(out)]
    assert any(r.startswith("cannot tell the generation task") for r in reasons)


def test_the_mixture_planners_build_each_generation_rows_task(ingested):
    """The records take the shapes the mixture's planners read: each row's task is among the
    samples planned from it. Super-resolution pairs (MRI to MRI) are left out: today's pair
    planner knows only CT<->MRI and does not yet read the record's task."""
    from healthgpt.data.mixture.config import MixtureConfig
    from healthgpt.data.mixture.tasks import AnswerSets, TaskContext, plan_record

    context = TaskContext(MixtureConfig(task_sources={}), AnswerSets())
    _, out = ingested["vl_health_generation"]
    planned = {
        meta(r)["sample_id"]: (
            r["task"],
            [p.task for p in plan_record(r, "x", "train", context)[0]],
        )
        for r in records(out)
    }
    for sample_id in ("gen-ct2mri", "gen-mri2ct", "gen-recon", "gen-recon-no-output", "gen-t2i"):
        task, tasks = planned[sample_id]
        assert task in tasks, (sample_id, task, tasks)


def test_reconstruction_file_rows_are_all_reconstructions(ingested):
    _, out = ingested["vl_health_reconstruction"]
    rows = records(out)
    assert {(r["kind"], r["task"], meta(r)["task_from"]) for r in rows} == {
        ("image", "reconstruction", "dataset")
    }


def test_comprehension_modality_from_its_label(ingested):
    _, out = ingested["vl_health_comprehension"]
    got = by_sample_id(out)
    assert got["comp-fundus_microaneurysms"]["modality"] == "Fundus"
    assert got["comp-us_doppler"]["modality"] == "Ultrasound"
    assert {r["kind"] for r in got.values()} == {"conversation"}


@pytest.mark.parametrize(
    ("text", "has_input", "task"),
    [
        ("Convert this CT image of the head into the corresponding MRI image.", True, "ct_to_mri"),
        ("Translate this MRI slice into a CT slice.", True, "mri_to_ct"),
        (
            "Generate the computed tomography image for this magnetic resonance scan.",
            True,
            "mri_to_ct",
        ),
        ("Super-resolve this MRI image (4x).", True, "super_resolution"),
        ("Reconstruct the image.", True, "reconstruction"),
        ("FINDINGS: clear lungs. IMPRESSION: normal.", False, "text_to_image"),
        ("Make it look nicer.", True, None),
        ("Describe this CT.", True, None),
    ],
)
def test_task_from_instruction(text, has_input, task):
    assert task_from_instruction(text, has_input) == task


@pytest.mark.parametrize(
    ("value", "task"),
    [
        ("ct_to_mri", "ct_to_mri"),
        ("Super-Resolution", "super_resolution"),
        ("report_to_cxr", "text_to_image"),
    ],
)
def test_task_field_values(value, task):
    assert normalize_task(value) == task


def test_unknown_task_field_value_is_refused():
    with pytest.raises(BadInput, match="not one of"):
        normalize_task("segmentation")


@pytest.mark.parametrize("name", DATASETS)
def test_wrong_layout_names_the_expected_one(name, tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(LayoutError, match="no listing file matching") as error:
        reader_class(name)(tmp_path).validate_layout()
    assert "<root>/" in str(error.value)
