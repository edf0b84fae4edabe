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
