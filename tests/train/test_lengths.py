"""Truncation is never silent: before a stage trains, every row is fitted to `max_length`;
rows whose answer or image would be cut, or that have no answer, are dropped with a counted
reason, multi-turn rows are cut at a turn boundary, no sample without labels reaches a batch,
and the length statistics and counts are reported (log and stage metadata)."""

from __future__ import annotations

import numpy as np
import pytest

from healthgpt.data.schema import SAMPLE_SCHEMA
from healthgpt.data.shards import ShardWriter
from healthgpt.model import GENERATION, IGNORE_INDEX
from healthgpt.model.prompt import SampleDropped
from healthgpt.train.data import RowIndex, ShardStream, StreamSpec, iter_rows, split_files
from healthgpt.train.lengths import measure, screen, summarize
from healthgpt.train.model_api import TARGET_IMAGE_CUT, build_bundle
from healthgpt.train.run import TARGET_COLUMNS, Reporter, RunSpec, run_stage
from healthgpt.train.synthetic import synthetic_row

COMP = "comprehension"


def _conversation(kind: str, index: int) -> list[dict[str, str]]:
    q = {"from": "human", "value": "<image>\nWhat modality is this image?"}
    if kind == "no_answer":
        return [q]
    if kind == "long_answer":
        return [q, {"from": "gpt", "value": "CT " * 60}]
    if kind == "multi_turn":
        return [
            q,
            {"from": "gpt", "value": "CT"},
            {"from": "human", "value": "And the window?"},
            {"from": "gpt", "value": "soft tissue " * 30},
        ]
    return [q, {"from": "gpt", "value": ("CT", "X-Ray")[index % 2]}]


KINDS = ["ok"] * 6 + ["no_answer", "long_answer", "multi_turn", "multi_turn"]


@pytest.fixture(scope="module")
def edge_mixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("edge")
    rng = np.random.default_rng(0)
    with ShardWriter(root / "stage3" / "data", SAMPLE_SCHEMA, prefix="train") as writer:
        for index, kind in enumerate(KINDS):
            row = synthetic_row(index, "train", COMP, rng)
            writer.write({**row, "conversations": _conversation(kind, index)})
    return root


def test_screen_counts_every_drop_and_cut(edge_mixture):
    bundle = build_bundle("tiny", 120, 0.0, 0, None)
    index = RowIndex.build(split_files(edge_mixture / "stage3", "train"), COMP)
    keep, report, _ = screen(index, bundle.encoder().fit, 120)
    assert keep.tolist() == [kind in ("ok", "multi_turn") for kind in KINDS]
    assert report.rows == 10 and report.kept == 8
    assert report.dropped == {"answer_cut": 1, "no_answer": 1}
    assert (report.shortened, report.turns_dropped) == (2, 2)
    assert report.over_max_length == pytest.approx(0.3)  # the long answer and the two multi-turn
    assert report.max > 120 and report.p50 <= report.p99 <= report.max
    assert "dropped 2 (1 answer_cut, 1 no_answer)" in report.line()

    # The kept rows stream into batches where every sample has labels, cut turns and all.
    stream = ShardStream(
        index.select(keep),
        StreamSpec(4, repeat=False, shuffle=False),
        bundle.encoder(),
        bundle.collator(),
        columns=bundle.columns,
    )
    batches = list(stream)
    assert sum(len(b["tasks"]) for b in batches) == 8
    for batch in batches:
        assert batch["input_ids"].shape[1] <= 120
        assert ((batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1) > 0).all()


def test_cut_generation_targets_are_counted_as_such(mixture_dir, vq_dir):
    bundle = build_bundle("tiny", 120, 0.0, 0, vq_dir)
    files = split_files(mixture_dir / "stage1", "train")
    bundle.add_target_codes(iter_rows(files, TARGET_COLUMNS, GENERATION))
    index = RowIndex.build(files, GENERATION)
    keep, report, _ = screen(index, bundle.encoder().fit, 120)
    assert not keep.any() and report.dropped == {TARGET_IMAGE_CUT: 32}
    assert report.over_max_length == 1.0 and report.p50 == report.max > 120
    row = next(iter_rows(files, bundle.columns + ["target_image"], GENERATION))
    with pytest.raises(SampleDropped) as error:
        bundle.encoder()(row)
    assert error.value.reason == TARGET_IMAGE_CUT


def test_stage_reports_lengths_and_drops_before_training(tmp_path, mixture_dir, vq_dir):
    lines: list[str] = []
    overrides = {"max_length": 120, "max_steps": 2, "eval_samples": 4, "max_new_tokens": 1}
    overrides |= {"num_workers": 0, "log_every": 1}
    spec = RunSpec("stage1", mixture_dir, tmp_path, vq_dir=vq_dir, overrides=overrides)
    metrics = run_stage(spec, Reporter(log=lines.append))
    lengths = metrics["lengths"]
    assert lengths[GENERATION]["dropped"] == {TARGET_IMAGE_CUT: 32}
    assert lengths[COMP]["kept"] == lengths[COMP]["rows"] == 32
    assert set(lengths[COMP]) >= {"p50", "p99", "max", "over_max_length", "max_length"}
    assert metrics["loss"].keys() == {COMP}, "a family with no trainable row takes no step"
    assert metrics["eval_dropped"] == {TARGET_IMAGE_CUT: 2}
    first_step = next(i for i, line in enumerate(lines) if line.startswith("step 1/"))
    reported = [i for i, line in enumerate(lines) if "p99" in line and "max_length 120" in line]
    assert len(reported) == 2 and max(reported) < first_step


def test_ranks_share_the_screening(mixture_dir):
    """Each rank fits every world-th row group; the summed tables are the one-rank result."""
    bundle = build_bundle("tiny", 512, 0.0, 0, None)
    index = RowIndex.build(split_files(mixture_dir / "stage1", "train"), COMP)
    assert len(list(index.row_groups())) >= 2
    fit = bundle.encoder().fit
    keep, report, _ = screen(index, fit, 512)
    parts = [measure(index, fit, rank, 3) for rank in range(3)]
    assert all((part[0] == 1).sum() < len(index) for part in parts)
    split_keep, split_report = summarize(sum(parts), 512)
    assert (split_keep == keep).all() and split_report == report
    with pytest.raises(RuntimeError, match="incomplete"):
        summarize(parts[0], 512)
