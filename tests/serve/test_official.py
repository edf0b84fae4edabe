"""`--official DIR` goes through the evaluation's loader: strict loading, the VQGAN named on
the command line (hashed when it is loaded), the dry run, and one-line refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from healthgpt.cli import main
from healthgpt.eval import models
from healthgpt.serve.inference import Inference, ModelChoice, ServeError
from healthgpt.storage import file_sha256


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A released-weights directory whose comprehension file fills nothing: incomplete."""
    directory = tmp_path / "release"
    directory.mkdir()
    torch.save({}, directory / "com_hlora_weights.bin")
    return directory


@pytest.fixture
def real_like(monkeypatch) -> str:
    """The tiny preset marked as needing a trained VQGAN, as m3 and l14 are."""
    from healthgpt.model import presets

    monkeypatch.setitem(
        presets.PRESETS, "tiny_real", lambda: replace(presets.tiny(), requires_trained_vq=True)
    )
    return "tiny_real"


@pytest.fixture(scope="module")
def vq_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registered (`save_vq`) VQ tokenizer of the tiny preset's shape."""
    from healthgpt.model.presets import tiny
    from healthgpt.model.vq import VQTokenizer, save_vq

    torch.manual_seed(0)
    return save_vq(VQTokenizer(tiny().vq), tmp_path_factory.mktemp("vq") / "vq.safetensors")


def _error(capsys) -> str:
    """The error line, the last on stderr (after the loading lines when the model loaded)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and ": error: " in lines[-1], lines
    assert not any(": error: " in line for line in lines[:-1]), lines
    return lines[-1]


def test_incomplete_released_weights_are_one_line_and_exit_2(release, scan_png, capsys):
    argv = ["ask", str(scan_png), "q", "--official", str(release), "--preset", "tiny"]
    assert main(argv) == 2
    err = _error(capsys)
    assert err.startswith("healthgpt ask: error: official weights incomplete:")
    assert "expected tensors missing" in err and "--allow-partial-weights" in err


def test_a_random_vqgan_is_refused_for_a_real_preset_unless_a_dry_run(
    release, real_like, scan_png, tmp_path, capsys
):
    out = tmp_path / "mri.png"
    argv = ["generate", "--task", "ct_to_mri", str(scan_png), "--out", str(out)]
    argv += ["--official", str(release), "--preset", real_like, "--allow-partial-weights"]
    assert main(argv) == 2
    err = _error(capsys)
    assert err.startswith("healthgpt generate: error: preset 'tiny' needs a trained VQGAN")
    assert "--vq-dry-run" in err and not out.exists()
    assert main([*argv, "--vq-dry-run"]) == 0
    assert "VQ weights: random (dry run)" in capsys.readouterr().err and out.is_file()


def test_the_vqgan_given_is_hashed_loaded_and_named(
    release, real_like, vq_file, scan_png, tmp_path, capsys
):
    out = tmp_path / "mri.png"
    argv = ["generate", "--task", "ct_to_mri", str(scan_png), "--out", str(out)]
    argv += ["--official", str(release), "--preset", real_like, "--allow-partial-weights"]
    assert main([*argv, "--vqgan", str(vq_file)]) == 0
    err = capsys.readouterr().err
    assert f"VQ weights: {vq_file} (sha256 {file_sha256(vq_file)})" in err
    assert out.is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--vqgan", "{tmp}/last.ckpt"], "needs its --vqgan-yaml model.yaml"),
        (["--vqgan", "{tmp}/absent.safetensors"], "VQGAN file not found"),
        (["--vqgan-yaml", "{tmp}/model.yaml"], "give both"),
    ],
)
def test_vqgan_options_are_checked_before_loading(
    extra, message, release, scan_png, tmp_path, capsys
):
    (tmp_path / "last.ckpt").write_bytes(b"not loaded")
    argv = ["ask", str(scan_png), "q", "--official", str(release)]
    assert main([*argv, *(a.format(tmp=tmp_path) for a in extra)]) == 2
    assert message in _error(capsys)


def test_base_model_and_vqgan_need_the_released_weights(trained_data, scan_png, capsys):
    argv = ["ask", str(scan_png), "q", "--data-dir", str(trained_data), "--base-model", "x"]
    assert main(argv) == 2
    assert "use them with --official DIR" in _error(capsys)


def test_every_option_reaches_the_evaluations_loader(release, tmp_path, monkeypatch):
    """One loader: the released weights with a base model and a VQGAN are a `ModelSpec`
    handed to `models.load_healthgpt`, as the evaluation hands them."""
    seen: list[models.ModelSpec] = []

    def load(spec: models.ModelSpec):
        seen.append(spec)
        raise models.ModelUnavailable("stop\nhere")

    monkeypatch.setattr(models, "load_healthgpt", load)
    yaml_file = tmp_path / "model.yaml"
    ckpt = tmp_path / "last.ckpt"
    yaml_file.write_text("model: {}\n")
    ckpt.write_bytes(b"weights")
    choice = ModelChoice(
        official=str(release),
        preset="m3",
        base_model="/models/phi3",
        vqgan=str(ckpt),
        vqgan_yaml=str(yaml_file),
        vq_dry_run=True,
        max_new_tokens=9,
    )
    with pytest.raises(ServeError, match="^stop here$"):
        Inference.load(choice, tmp_path)
    assert seen == [
        models.ModelSpec(
            preset="m3",
            official_dir=str(release),
            max_new_tokens=9,
            base_model="/models/phi3",
            vq_dry_run=True,
            vq_path=str(ckpt),
            vq_sha256=file_sha256(ckpt),
            vq_yaml_path=str(yaml_file),
            vq_yaml_sha256=file_sha256(yaml_file),
        )
    ]
