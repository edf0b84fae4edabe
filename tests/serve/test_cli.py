"""`healthgpt ask` and `healthgpt generate` on a checkpoint the pipeline trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from healthgpt.cli import main
from healthgpt.model import get_preset
from healthgpt.serve.inference import TASKS, ServeError, instruction
from healthgpt.train.run import current_final

REPO = Path(__file__).resolve().parents[2]
FAST = ["--max-new-tokens", "4"]


def test_ask_the_newest_stage3_checkpoint_under_the_data_dir(trained_data, scan_png, capsys):
    argv = ["ask", str(scan_png), "What modality is this?", "--data-dir", str(trained_data)]
    assert main([*argv, *FAST]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip()  # the answer, whatever the one-step model says
    assert f"loaded checkpoint {current_final(trained_data / 'checkpoints' / 'stage3').name}" in (
        captured.err
    )


def test_generate_writes_a_png_of_the_vq_size(trained_data, scan_png, tmp_path, capsys):
    out = tmp_path / "mri.png"
    checkpoint = current_final(trained_data / "checkpoints" / "stage3")
    argv = ["generate", "--task", "ct_to_mri", str(scan_png), "--out", str(out)]
    assert main([*argv, "--checkpoint", str(checkpoint)]) == 0
    size = get_preset("tiny").vq.resolution  # the checkpoint's preset, read from its metadata
    with Image.open(out) as image:
        assert image.size == (size, size) and image.format == "PNG"
    assert json.loads(capsys.readouterr().out) == {"out": str(out), "width": size, "height": size}


def test_ask_in_a_subprocess_through_the_entry_point(trained_data, scan_png):
    env = {**os.environ, "HEALTHGPT_DATA_DIR": str(trained_data), "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "healthgpt.cli", "ask", str(scan_png), "Is it normal?", *FAST]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "{png}", "q", "--checkpoint", "{tmp}/missing"], "checkpoint not found"),
        (["ask", "{png}", "q", "--data-dir", "{tmp}"], "no stage3 checkpoint under"),
        (["ask", "{png}", "q", "--official", "{tmp}"], "no official HealthGPT weights"),
        (["ask", "{tmp}/absent.png", "q"], "image not found"),
        (["ask", "{tmp}/bad.png", "q"], "bad.png: not a readable image"),
        (["generate", "--task", "text_to_image", "--out", "{tmp}/o.png"], "takes --report"),
        (["generate", "--task", "reconstruction", "--out", "{tmp}/o.png"], "needs an input"),
        (
            [
                "generate",
                "--task",
                "reconstruction",
                "{png}",
                "--report",
                "x",
                "--out",
                "{tmp}/o.png",
            ],
            "no --report",
        ),
        (["generate", "--task", "reconstruction", "{png}", "--out", "{tmp}/no/o.png"], "output"),
    ],
)
def test_errors_are_one_line_and_exit_2(argv, message, scan_png, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    filled = [a.format(png=scan_png, tmp=tmp_path) for a in argv]
    assert main(filled) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"healthgpt {argv[0]}: error:") and message in err
    assert "\n" not in err and not (tmp_path / "o.png").exists()


def test_an_unknown_task_is_refused_by_the_parser(scan_png, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--task", "ct_to_pet", str(scan_png), "--out", str(tmp_path / "o.png")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'ct_to_pet'" in capsys.readouterr().err


def test_instructions_are_the_first_training_template_of_each_task():
    from healthgpt.data.mixture.tasks import PROMPTS

    assert instruction("ct_to_mri") == (
        "Convert this CT image of the head into the corresponding MRI image."
    )
    assert instruction("mri_to_ct", body_part="Pelvis") == (
        "Convert this MRI image of the pelvis into the corresponding CT image."
    )
    assert instruction("super_resolution", modality="CT") == (
        "Increase the resolution of this CT image by a factor of 4."
    )
    assert instruction("reconstruction") == PROMPTS["reconstruction"][0]
    assert instruction("text_to_image", report=" No acute findings. ") == (
        "Generate a chest X-ray image that matches this report:\nNo acute findings."
    )
    assert set(TASKS) <= set(PROMPTS)


@pytest.mark.parametrize(
    ("task", "fields", "message"),
    [
        ("text_to_image", {"report": ["a", "b"]}, "the report must be text, not list"),
        ("text_to_image", {"report": {"a": 1}}, "the report must be text, not dict"),
        ("super_resolution", {"modality": "M" * 1000}, "the modality has 1000 characters"),
        ("ct_to_mri", {"body_part": "x" * 1000}, "the body part has 1000 characters"),
        ("ct_to_mri", {"body_part": {"x": 1}}, "the body part must be text"),
        (["ct_to_mri"], {}, "unknown task list"),
    ],
)
def test_instruction_fields_of_the_wrong_type_or_length_are_refused(task, fields, message):
    with pytest.raises(ServeError, match=message):
        instruction(task, **fields)
