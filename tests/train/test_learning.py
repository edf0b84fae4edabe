"""It learns: stage 2 then a short stage 3 on images whose answer is decided by their content
(CT-like disc vs X-ray-like bands, same question for both). Stage 2 (embeddings and head
only) learns the answer format but cannot see which image it is; stage 3 (H-LoRA plugin and
projector, initialized from stage 2's file) drops the loss well below its start and answers
held-out images far above chance, with the real HealthGPT model (tiny preset).
"""

from __future__ import annotations

from healthgpt.train.run import RunSpec, current_final, run_stage

COMMON = {"families": {"generation": None}, "num_workers": 0, "checkpoint_every": 1000}
STAGE2 = {**COMMON, "max_steps": 20, "epochs": 20.0, "eval_samples": 2, "max_new_tokens": 1}
STAGE3 = {**COMMON, "max_steps": 40, "epochs": 50.0, "eval_samples": 16, "log_every": 10}


def test_stage2_then_stage3_learns_image_dependent_answers(tmp_path, mixture_dir, vq_dir):
    run_stage(RunSpec("stage2", mixture_dir, tmp_path / "stage2", vq_dir=vq_dir, overrides=STAGE2))
    metrics = run_stage(
        RunSpec(
            "stage3",
            mixture_dir,
            tmp_path / "stage3",
            init_dir=current_final(tmp_path / "stage2"),
            vq_dir=vq_dir,
            overrides=STAGE3,
        )
    )
    loss = metrics["loss"]["comprehension"]
    assert loss["last"] < 0.75 * loss["first"], loss
    assert metrics["closed_questions"] == 16
    assert metrics["closed_chance"] == 0.5
    assert metrics["closed_accuracy"] >= 0.8, metrics["closed_examples"]
