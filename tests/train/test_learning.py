"""It learns: a short stage-3 run on images whose answer is decided by their content (CT-like
disc vs X-ray-like bands, same question for both) drops the loss well below its start and
answers held-out images far above chance.
"""

from __future__ import annotations

from healthgpt.train.run import RunSpec, run_stage

OVERRIDES = {
    "families": {"generation": None},
    "max_steps": 40,
    "epochs": 50.0,
    "eval_samples": 16,
    "num_workers": 0,
    "checkpoint_every": 1000,
    "log_every": 10,
}


def test_short_stage3_learns_image_dependent_answers(tmp_path, mixture_dir, vq_dir):
    metrics = run_stage(
        RunSpec("stage3", mixture_dir, tmp_path / "stage3", vq_dir=vq_dir, overrides=OVERRIDES)
    )
    loss = metrics["loss"]["comprehension"]
    assert loss["last"] < 0.75 * loss["first"], loss
    assert metrics["closed_questions"] == 16
    assert metrics["closed_chance"] == 0.5
    assert metrics["closed_accuracy"] >= 0.8, metrics["closed_examples"]
