import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from healthgpt.eval.generation import (
    DEFAULT_INSTRUCTIONS,
    evaluate_generation,
    read_pairs,
    table_column,
)
from healthgpt.eval.metrics import PSNR_CAP
from tests.eval.fakes import FakeImageModel, write_generation_pairs


@pytest.mark.parametrize(
    ("task", "body_part", "column"),
    [
        ("ct_to_mri", "head", "ct2mri_brain"),
        ("ct_to_mri", "pelvis", "ct2mri_pelvis"),
        ("mri_to_ct", "brain", "mri2ct_brain"),
        ("mri_to_ct", None, "mri2ct_other"),
        ("super_resolution", "head", "super_resolution"),
        ("reconstruction", None, "reconstruction"),
    ],
)
def test_table_columns(task, body_part, column):
    assert table_column(task, body_part) == column


def test_read_pairs_takes_held_out_generation_samples_with_their_instruction(tmp_path):
    write_generation_pairs(tmp_path / "eval" / "data")
    pairs = list(read_pairs(tmp_path / "eval"))
    assert [p.id for p in pairs] == ["ct-brain-0", "ct-brain-1", "sr-0"]
    assert pairs[0].instruction == "Please do ct_to_mri."
    assert pairs[2].column == "super_resolution"
    assert len(list(read_pairs(tmp_path / "eval", limit=1))) == 1
    assert "super_resolution" in DEFAULT_INSTRUCTIONS


def test_identity_model_scores_by_hand(tmp_path):
    write_generation_pairs(tmp_path / "pairs")
    model = FakeImageModel()
    result = evaluate_generation(
        model, read_pairs(tmp_path / "pairs"), tmp_path / "out", batch_size=2, grid_per_column=1
    )
    perfect = result.scores["ct2mri_brain"]
    values = {m: (perfect[m] or {}).get("value") for m in ("ssim", "psnr", "mse", "lpips")}
    assert perfect["n"] == 2
    assert values == {"ssim": 100.0, "psnr": PSNR_CAP, "mse": 0.0, "lpips": None}
    assert perfect["mse"]["ci"] == [0.0, 0.0]  # two identical values: no spread
    assert set(perfect["by_source"]) == {"synthrad2023"}
    offset = result.scores["super_resolution"]  # target = input + 10 everywhere (no clipping)
    assert offset["mse"]["value"] == 100.0
    assert offset["psnr"]["value"] == 28.13
    assert 90.0 < offset["ssim"]["value"] < 100.0
    assert model.instructions[0] == "Please do ct_to_mri."

    rows = pq.read_table(tmp_path / "out" / result.shards[0].path).to_pylist()
    assert [r["column"] for r in rows] == ["ct2mri_brain", "ct2mri_brain", "super_resolution"]
    assert {r["source"] for r in rows} == {"synthrad2023"}  # every predictions row names it
    generated = np.asarray(Image.open(io.BytesIO(rows[0]["generated"])))
    assert generated.shape == (256, 256)

    grid = Image.open(io.BytesIO(result.grid_png))
    assert grid.size == (150 + 3 * 132, 18 + 2 * 132)  # one example for each of two columns


def test_lpips_function_is_used_when_given(tmp_path):
    write_generation_pairs(tmp_path / "pairs")
    result = evaluate_generation(
        FakeImageModel(),
        read_pairs(tmp_path / "pairs"),
        tmp_path / "out",
        lpips_fn=lambda a, b: 0.25,
    )
    assert result.scores["super_resolution"]["lpips"]["value"] == 25.0
