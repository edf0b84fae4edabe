"""Regression tests for the LLaVA-style readers against hostile rows: bad paths in chunked
runs, rows the trainer cannot format, and ids or file names that carry PHI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from healthgpt.data.errors import BadInput
from healthgpt.data.limits import confine
from healthgpt.data.options import ReaderOptions
from healthgpt.data.sources import LayoutError
from healthgpt.data.sources.llava_json import LlavaJsonReader
from healthgpt.data.tasks import SPEAKER_ROLES
from tests.data.outputs import assert_no_phi, quarantine, records, run

SALT = "s" * 32
TURNS = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A lung."}]


def llava_root(root: Path, rows: list[dict]) -> Path:
    """A `llava_json` source: one listing and one small image `a.jpg`."""
    root.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 128).save(root / "a.jpg")
    (root / "data.json").write_text(json.dumps(rows))
    return root


@pytest.mark.parametrize(
    "name, reason",
    [("loop1.jpg", "symlink loop"), ("a\0.jpg", "NUL byte"), ("x" * 5000 + ".jpg", "too long")],
)
def test_confine_turns_unusable_paths_into_bad_input(tmp_path, name, reason):
    os.symlink(tmp_path / "loop2.jpg", tmp_path / "loop1.jpg")
    os.symlink(tmp_path / "loop1.jpg", tmp_path / "loop2.jpg")
    with pytest.raises(BadInput, match=reason):
        confine(tmp_path, name)


@pytest.mark.parametrize("chunk", [None, (0, 1)])
def test_one_unusable_image_path_is_quarantined_in_a_chunked_run(tmp_path, chunk):
    root = tmp_path / "root"
    rows = [
        {"id": str(i), "image": image, "conversations": TURNS}
        for i, image in enumerate(["a.jpg", "loop1.jpg", "a\0.jpg", "x" * 5000 + ".jpg"])
    ]
    llava_root(root, rows)
    os.symlink(root / "loop2.jpg", root / "loop1.jpg")
    os.symlink(root / "loop1.jpg", root / "loop2.jpg")
    summary = run("llava_json", root, tmp_path / "out", deid_salt=SALT, chunk=chunk)
    assert (summary.items, summary.quarantined) == (4, 3)
    assert len(records(tmp_path / "out")) == 1
    assert all(
        q["reason"].startswith("path cannot be resolved") for q in quarantine(tmp_path / "out")
    )


def test_an_absolute_files_glob_is_a_layout_error(tmp_path):
    root = llava_root(tmp_path / "root", [])
    reader = LlavaJsonReader(root, ReaderOptions(deid_salt=SALT, extra={"files": "/etc/*.json"}))
    with pytest.raises(LayoutError, match="relative to the source root"):
        reader.validate_layout()


def test_origin_patterns_are_globs_that_cannot_backtrack_and_long_ids_are_refused(tmp_path):
    rows = [
        {"id": "a" * 200 + "!", "image": "a.jpg", "conversations": TURNS},
        {"id": "b" * 300, "image": "a.jpg", "conversations": TURNS},
    ]
    root = llava_root(tmp_path / "root", rows)
    patterns = {"llava_558k": "*a*a*a*a*a*a*a*a*a*a*a*a*b", "pubmedvision": "a*!"}
    started = time.monotonic()
    run(
        "vl_health_alignment",
        root,
        tmp_path / "out",
        deid_salt=SALT,
        extra={"origin_patterns": patterns},
    )
    assert time.monotonic() - started < 30
    assert [q["reason"] for q in quarantine(tmp_path / "out")] == [
        "row id longer than 256 characters"
    ]


def test_rows_the_trainer_cannot_format_are_quarantined_with_reasons(tmp_path):
    def turns(question: str, answer: str, speaker: str = "gpt") -> list[dict]:
        return [{"from": "human", "value": question}, {"from": speaker, "value": answer}]

    rows = [
        {"id": "ok", "image": "a.jpg", "conversations": TURNS},
        {"id": "bot", "image": "a.jpg", "conversations": turns("<image>\nQ?", "A.", "bot")},
        {"id": "answer-image", "image": "a.jpg", "conversations": turns("<image>\nQ?", "<image>")},
        {"id": "no-placeholder", "image": "a.jpg", "conversations": turns("Q?", "A.")},
        {"id": "two", "image": "a.jpg", "conversations": turns("<image>\n<image>\nQ?", "A.")},
        {"id": ["a", "list"], "image": "a.jpg", "conversations": TURNS},
    ]
    root = llava_root(tmp_path / "root", rows)
    summary = run("llava_json", root, tmp_path / "out", deid_salt=SALT)
    assert (summary.items, summary.quarantined) == (6, 5)
    assert sorted(q["reason"] for q in quarantine(tmp_path / "out")) == sorted(
        [
            "unknown speaker 'bot' (known: human, user, gpt, assistant)",
            "<image> in an assistant turn",
            "0 <image> placeholders in the question for 1 image(s)",
            "2 <image> placeholders in the question for 1 image(s)",
            "row id is a list, not a string or an integer",
        ]
    )


def test_the_trainer_formats_every_speaker_readers_accept():
    from healthgpt.model.prompt import ROLES

    assert set(SPEAKER_ROLES) <= set(ROLES)


def generation_root(root: Path, rows: list[dict]) -> Path:
    for name in ("in.png", "out.png"):
        (root / "c").mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), 100).save(root / "c" / name)
    (root / "gen.json").write_text(json.dumps(rows))
    return root


def test_generation_rows_that_contradict_their_task_are_quarantined(tmp_path):
    def row(key: str, task: str, image: str | None, output: str, **more) -> dict:
        question = ("<image>\n" if image else "") + "Make the target image."
        sample = {"id": key, "task": task, "output_image": output, **more}
        sample["conversations"] = [
            {"from": "human", "value": question},
            {"from": "gpt", "value": "<image>"},
        ]
        return {**sample, "image": image} if image else sample

    rows = [
        row("ok", "ct_to_mri", "c/in.png", "c/out.png", modality="CT"),
        row("t2i-input", "text_to_image", "c/in.png", "c/out.png"),
        row("sr-same", "super_resolution", "c/in.png", "c/in.png"),
        row("label", "mri_to_ct", "c/in.png", "c/out.png", modality="CT"),
    ]
    root = generation_root(tmp_path / "root", rows)
    summary = run("vl_health_generation", root, tmp_path / "out", deid_salt=SALT)
    assert (summary.items, summary.quarantined) == (4, 3)
    assert sorted(q["reason"] for q in quarantine(tmp_path / "out")) == [
        "modality label CT contradicts task mri_to_ct (input MRI)",
        "super_resolution row's output image is its input image",
        "text_to_image row names an input image (the task has none)",
    ]


def test_generic_reader_pseudonymizes_ids_and_file_names(tmp_path):
    name = "Quimby Rosalind 1234567.jpg"
    rows = [
        {"id": "Rosalind Quimby", "image": name, "conversations": TURNS},
        {"id": 7, "image": "missing Quimby.jpg", "conversations": TURNS},
    ]
    root = llava_root(tmp_path / "root", rows)
    Image.new("L", (8, 8), 128).save(root / name)
    run("llava_json", root, tmp_path / "out", deid_salt=SALT)
    assert_no_phi(tmp_path / "out", ["Quimby", "Rosalind", "1234567"])
    [record] = records(tmp_path / "out")
    assert record["orig_path"].startswith("file-")
    assert json.loads(record["meta"])["sample_id"].startswith("row-")


def test_a_generation_row_whose_target_is_vq_codes_says_so(tmp_path):
    codes = "<start_index>" + "".join(f"<idx_{i}>" for i in (5, 812, 77)) + "<end_index>"
    row = {
        "id": "codes",
        "task": "ct_to_mri",
        "image": "c/in.png",
        "conversations": [
            {"from": "human", "value": "<image>\nConvert this CT to MRI."},
            {"from": "gpt", "value": codes},
        ],
    }
    root = generation_root(tmp_path / "root", [row])
    run("vl_health_generation", root, tmp_path / "out", deid_salt=SALT)
    assert [q["reason"] for q in quarantine(tmp_path / "out")] == [
        "ct_to_mri row names no output_image (the target image file expected); "
        "its answer holds VQ code tokens, which are not read"
    ]
