"""`healthgpt.eval.run`: one family into its directory, without Dagster, on the test fakes."""

import json
from pathlib import Path

import pytest

from healthgpt.data.mixture.config import demo_preset
from healthgpt.eval import run
from tests.eval.fakes import (
    VQA_CASES,
    FakeImageModel,
    FakeTextModel,
    vqa_replies,
    write_generation_pairs,
    write_ingested_vqa,
    write_omnimedvqa,
)

CONFIG = {"batch_size": 2, "limit": 0, "marker": "echoed"}
TEXT_FIELDS = {"model", "medical", "benchmarks", "notes", "summary", "configured", "prompt_forms"}
TEXT_FIELDS |= {"config", "checkpoint"}


class Factory:
    """A model factory that counts its calls; its model reports one loading note."""

    def __init__(self, make):
        self.make = make
        self.calls = 0

    def __call__(self):
        self.calls += 1
        model = self.make()
        model.notes = ["loaded from the fake"]
        return model


def never():
    raise AssertionError("the model must not be built when there is nothing to evaluate")


def scores(out: Path) -> dict:
    return json.loads((out / "scores.json").read_text())


def vqa_sources(data: Path) -> dict[str, Path]:
    for source, cases in VQA_CASES.items():
        write_ingested_vqa(data, source, cases)
    return {name: data / "ingested" / name for name in ("vqa_rad", "slake", "pathvqa")}


OPTIONS = run.RunOptions(batch_size=2, limit=0, label="fake", config=CONFIG)


def run_vqa(sources, out, factory, trained=None):
    return run.run_benchmarks("vqa", factory, sources, out, OPTIONS, trained)


def run_generation(pairs_dir, out, factory, **overrides):
    settings = {"lpips": False, "keep_images": False, "grid_per_task": 1, **overrides}
    return run.run_generation(factory, pairs_dir, out, OPTIONS, **settings)


def test_vqa_without_test_shards_builds_no_model_and_says_why(tmp_path):
    out = tmp_path / "eval" / "vqa"
    done = run_vqa({"vqa_rad": tmp_path / "none"}, out, never)
    assert done.scores == {} and done.shards == [] and done.summary == ""
    assert scores(out)["notes"] == [
        f"vqa_rad: no ingested test split under {tmp_path / 'none'}; not evaluated",
        "slake: not configured (set roots.slake in the run config or HEALTHGPT_SLAKE_DIR to "
        "its published layout)",
        "pathvqa: not configured (set roots.pathvqa in the run config or HEALTHGPT_PATHVQA_DIR "
        "to its published layout)",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["scores.json"]


def test_vqa_scores_json_holds_the_payload_and_model_notes_come_last(tmp_path):
    factory = Factory(lambda: FakeTextModel(vqa_replies()))
    out = tmp_path / "eval" / "vqa"
    done = run_vqa(vqa_sources(tmp_path / "data"), out, factory, demo_preset())
    payload = scores(out)
    assert factory.calls == 1
    assert set(payload) == TEXT_FIELDS
    assert payload["model"] == done.model == "fake"
    assert payload["config"] == CONFIG
    assert payload["prompt_forms"]["vqa closed"].startswith("plain (trained:")
    assert payload["summary"] == done.summary == "vqa_rad 4 questions, slake 2 questions"
    assert payload["benchmarks"] == done.scores
    assert payload["benchmarks"]["slake"]["close"]["value"] == 100.0
    assert payload["notes"][0].startswith("pathvqa: no ingested test split")
    assert payload["notes"][-1] == "loaded from the fake" and payload["notes"] == done.notes
    assert done.out == out and all((out / shard.path).is_file() for shard in done.shards)
    assert sum(shard.rows for shard in done.shards) == 6


class BrokenTextModel:
    def generate_text(self, images, prompts):
        raise RuntimeError("GPU fell over")


@pytest.mark.parametrize(
    ("style", "closed"),
    [("plain", "plain"), ("choice", "single choice"), ("both", "single choice")],
)
def test_prompt_forms_name_the_vocabulary_form_of_the_trained_style(style, closed):
    forms = run.prompt_forms(demo_preset(closed_question_style=style), "the mixture on disk")
    assert forms["vqa closed"] == f"{closed} (trained: closed_question_style={style})"
    assert forms["vqa open"] == "plain" and forms["form decided from"] == "the mixture on disk"
    assert run.prompt_forms(None)["vqa closed"] == "plain (no training config known)"


def test_a_failure_mid_run_leaves_the_previous_output_as_it_was(tmp_path):
    out = tmp_path / "eval" / "vqa"
    out.mkdir(parents=True)
    (out / "scores.json").write_text('{"previous": true}')
    with pytest.raises(RuntimeError, match="GPU fell over"):
        run_vqa(vqa_sources(tmp_path / "data"), out, BrokenTextModel)
    assert scores(out) == {"previous": True}
    assert sorted(p.name for p in out.iterdir()) == ["scores.json"]
    assert not [p for p in out.parent.iterdir() if p.is_dir() and p != out]


def mcq_run(tmp_path, roots, factory):
    out = tmp_path / "eval" / "mcq"
    done = run.run_benchmarks("mcq", factory, roots, out, OPTIONS)
    return done, scores(out)


NOT_CONFIGURED_MMMU = (
    "mmmu_med: not configured (set roots.mmmu_med in the run config or HEALTHGPT_MMMU_DIR to "
    "its published layout)"
)


def test_mcq_not_configured_builds_no_model_and_names_what_to_set(tmp_path):
    done, payload = mcq_run(tmp_path, {}, never)
    assert set(payload) == TEXT_FIELDS
    assert payload["configured"] == [] and payload["benchmarks"] == {}
    assert payload["notes"] == done.notes
    assert done.notes[0] == NOT_CONFIGURED_MMMU
    assert done.notes[1].startswith("omnimedvqa: not configured (set roots.omnimedvqa")


def test_mcq_configured_reports_skipped_rows_after_the_model_notes(tmp_path):
    root = write_omnimedvqa(tmp_path / "OmniMedVQA")
    factory = Factory(lambda: FakeTextModel({"What modality is used?": "B"}))
    done, payload = mcq_run(tmp_path, {"omnimedvqa": root}, factory)
    assert factory.calls == 1
    assert payload["configured"] == ["omnimedvqa"]
    assert payload["prompt_forms"]["multiple choice"].endswith("from the given choices directly.")
    assert payload["summary"] == "omnimedvqa 2 questions"
    assert payload["notes"] == [
        NOT_CONFIGURED_MMMU,
        "loaded from the fake",
        "omnimedvqa: 1 rows skipped: gt_answer matches no single option",
        "omnimedvqa: 1 rows skipped: image file missing",
    ]
    assert done.notes == payload["notes"]


def test_generation_without_pairs_builds_no_model_and_writes_no_grid(tmp_path):
    out = tmp_path / "eval" / "generation"
    done = run_generation(tmp_path / "empty", out, never)
    payload = scores(out)
    assert set(payload) == {
        "model",
        "checkpoint",
        "medical",
        "columns",
        "notes",
        "summary",
        "ssim_window",
        "config",
    }
    assert payload["notes"] == [
        "LPIPS disabled by config",
        f"no held-out test generation pairs under {tmp_path / 'empty'}",
    ]
    assert done.grid_png is None and not (out / "grid.png").exists()
    assert payload["checkpoint"] is None  # no model was built, so no checkpoint was evaluated


def test_generation_writes_scores_and_the_grid_it_returns(tmp_path):
    pairs_dir = tmp_path / "mixture" / "eval"
    write_generation_pairs(pairs_dir / "data")
    out = tmp_path / "eval" / "generation"
    factory = Factory(FakeImageModel)
    done = run_generation(pairs_dir, out, factory, ssim_window="uniform")
    payload = scores(out)
    assert factory.calls == 1
    assert payload["ssim_window"] == "uniform" and payload["columns"] == done.scores
    assert sum(column["n"] for column in done.scores.values()) == 3
    assert payload["notes"] == ["LPIPS disabled by config", "loaded from the fake"]
    assert done.grid_png and (out / "grid.png").read_bytes() == done.grid_png


def test_generation_rejects_an_unknown_ssim_window_before_touching_the_output(tmp_path):
    out = tmp_path / "eval" / "generation"
    with pytest.raises(ValueError, match="ssim_window must be one of"):
        run_generation(tmp_path, out, never, ssim_window="box")
    assert not out.parent.exists()


def test_report_is_written_atomically_and_says_which_families_ran(tmp_path):
    eval_dir = tmp_path / "eval"
    run_vqa({"vqa_rad": tmp_path / "none"}, eval_dir / "vqa", never)
    written = run.run_report(eval_dir)
    assert written.path == eval_dir / "report.md"
    assert written.path.read_text() == written.markdown
    assert (eval_dir / "report.png").read_bytes() == written.png and written.png[:4] == b"\x89PNG"
    assert written.evaluated == {"vqa": True, "mcq": False, "generation": False}
    assert not list(eval_dir.glob(".report.md*"))


def test_only_the_selected_benchmarks_run_and_the_others_make_no_note(tmp_path):
    factory = Factory(lambda: FakeTextModel(vqa_replies()))
    out = tmp_path / "eval" / "vqa"
    sources = vqa_sources(tmp_path / "data")
    done = run.run_benchmarks("vqa", factory, sources, out, OPTIONS, names=["slake"])
    assert set(done.scores) == {"slake"} and done.notes == ["loaded from the fake"]
