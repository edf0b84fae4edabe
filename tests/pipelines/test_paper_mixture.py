"""`make demo-paper` in small: the paper's datasets, as their bundled miniatures, ingested and
mixed in Dagster under the `paper_sample` preset, put exactly the paper's datasets and tasks
in each stage, pass the mixture's checks, and show the card's comparison with the paper."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
import pytest

from healthgpt.data.mixture.config import PAPER_ROUTES
from healthgpt.data.samples import build_sample_sources
from healthgpt.data.tasks import STAGE1, STAGE2, STAGE3
from pipelines.mixture import CHECKS, mixture_key, vl_health_mixture_asset
from pipelines.resources import DataLocations
from pipelines.sources import _ingest_factory
from tests.data.mixture_helpers import subset_groups

# Every dataset the paper routes, and one it does not (its rows must go nowhere).
PAPER_DATASETS = sorted({name for stage in PAPER_ROUTES.values() for name in stage})
DATASETS = [*PAPER_DATASETS, "llava_json"]

# The paper's composition (arXiv 2502.09838, sec. 4) as the miniatures can show it. The
# alignment captions are conversations. The preset leaves out what the samples cannot show
# (`PAPER_SAMPLE_DECONTAMINATED`). The miniatures share a few real images, so decontamination
# and dedup take whole groups out of training: `REMOVED` says which, and why.
STAGE1_GROUPS = {
    ("llava_558k", "conversation"),
    ("llava_558k", "reconstruction"),
    ("pubmedvision", "conversation"),
    ("vl_health_reconstruction", "reconstruction"),
}
STAGE3_GROUPS = {
    # VQA-RAD is decontaminated by question (`decontaminate_by_question`), and no training
    # question of its miniature asks what a test question asks about the same image.
    ("vqa_rad", "vqa_choice"),
    ("vqa_rad", "vqa_open"),
    ("pathvqa", "vqa_choice"),
    ("pathvqa", "vqa_open"),
    ("llava_med", "conversation"),
    ("pubmedvision", "conversation"),
    ("vl_health_comprehension", "conversation"),
    ("synthrad2023", "ct_to_mri"),
    ("synthrad2023", "mri_to_ct"),
}
REMOVED = {
    ("slake", "vqa_choice"): {"eval_exact"},
    ("slake", "vqa_open"): {"eval_exact"},
    ("vl_health_alignment", "conversation"): {"eval_exact", "duplicate_exact"},
    ("vl_health_generation", "ct_to_mri"): {"eval_exact"},
    ("vl_health_generation", "mri_to_ct"): {"eval_exact"},
}
# Routed by the paper but not for what its miniature holds, or not by the paper at all.
NOTHING_ROUTED = {"mimic_cxr", "ixi", "llava_json"}


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_demo")
    build_sample_sources(root / "sources", DATASETS)
    locations = DataLocations(data_dir=str(root / "data"), sources_dir=str(root / "sources"))
    result = dg.materialize(
        [*(_ingest_factory(name) for name in DATASETS), vl_health_mixture_asset(DATASETS)],
        resources={"locations": locations},
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"vl_health_mixture": {"config": {"preset": "paper_sample"}}}},
    )
    return result, locations.mixture_dir()


def test_each_stage_holds_exactly_the_papers_datasets_and_tasks(paper_run):
    result, mixture = paper_run
    assert result.success
    stage1, stage2, stage3 = (subset_groups(mixture, s) for s in (STAGE1, STAGE2, STAGE3))
    assert stage1 == STAGE1_GROUPS
    assert stage2 and stage2 <= stage1
    assert stage3 == STAGE3_GROUPS
    removed = pq.read_table(mixture / "removed.parquet", columns=["source", "task", "reason"])
    reasons: dict[tuple, set[str]] = {}
    for row in removed.to_pylist():
        reasons.setdefault((row["source"], row["task"]), set()).add(row["reason"])
    for group, why in REMOVED.items():
        assert reasons.get(group) == why, group
    for source in NOTHING_ROUTED:
        assert reasons.get((source, None)) >= {"no_task_for_kind"}, source
    # The evaluation has the paper's held-out questions and generation pairs to run on.
    held_out = subset_groups(mixture, "eval")
    assert {("synthrad2023", "ct_to_mri"), ("synthrad2023", "mri_to_ct")} <= held_out
    assert {(s, "vqa_choice") for s in ("vqa_rad", "slake", "pathvqa")} <= held_out


def test_the_mixture_checks_pass_and_the_asset_shows_the_paper_comparison(paper_run):
    result, mixture = paper_run
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == set(CHECKS)
    failed = {name: c.metadata for name, c in checks.items() if not c.passed}
    assert not failed
    [stage3] = [
        m for m in result.get_asset_materialization_events() if m.asset_key == mixture_key(STAGE3)
    ]
    metadata = stage3.materialization.metadata
    # Ingested through the readers, every image's identity is stored, and this preset
    # degrades none for super-resolution: the build decodes no image at all.
    assert metadata["images_decoded"].value == 0
    beside = metadata["beside_the_paper"].value
    assert "765,802" in beside and "| llava_558k |" in beside
    card = (mixture / "README.md").read_text()
    assert beside in card
    assert metadata["card"].value == str(mixture / "README.md")
