"""healthgpt.progress: throttled lines with counts, rate and ETA through logging."""

from __future__ import annotations

import logging

from healthgpt.progress import Progress, duration, track


def test_lines_are_throttled_and_carry_count_rate_eta_and_fields(caplog):
    caplog.set_level(logging.INFO, logger="healthgpt.progress")
    with Progress("vq training", total=4, unit="steps", every=0.0, bar=False) as progress:
        for step in range(4):
            progress.update(loss=1.0 / (step + 1))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5  # every update (every=0) and the closing line
    assert lines[0].startswith("vq training: 1/4 steps (25%)")
    assert "steps/s" in lines[0] and "ETA" in lines[0] and "loss 1" in lines[0]
    assert lines[-1].startswith("vq training: 4/4 steps") and "done in" in lines[-1]
    assert "loss 0.25" in lines[-1]


def test_a_long_interval_logs_only_the_end(caplog):
    caplog.set_level(logging.INFO, logger="healthgpt.progress")
    items = list(track(range(100), "rows", every=3600.0))
    assert items == list(range(100))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("rows: 100/100 items")


def test_duration():
    assert [duration(5), duration(185), duration(3725)] == ["5s", "3m05s", "1h02m"]


def test_dagster_run_log_receives_progress_lines():
    """The shipped instance config makes Dagster capture the `healthgpt` loggers."""
    from pathlib import Path

    import dagster as dg
    import yaml
    from dagster._core.test_utils import instance_for_test

    shipped = yaml.safe_load(
        (Path(__file__).parents[1] / "dagster_home" / "dagster.yaml").read_text()
    )

    @dg.asset
    def long_step() -> None:
        with Progress("long step", total=2, unit="steps", every=0.0, bar=False) as progress:
            progress.update(2)

    with instance_for_test(overrides={"python_logs": shipped["python_logs"]}) as instance:
        run = dg.materialize([long_step], instance=instance)
        messages = [e.user_message or "" for e in instance.all_logs(run.run_id)]
    assert any(m.startswith("long step: 2/2 steps") and "done in" in m for m in messages)
