import copy
import math

import pytest

from healthgpt.eval.report import (
    load_published,
    medical_mark,
    render_report,
    table1_values,
)

PUBLISHED = load_published()
TABLE1_BENCHMARKS = ("vqa_rad", "slake", "pathvqa")


def test_published_file_cites_its_source_and_rows_fit_their_columns():
    assert "2502.09838" in PUBLISHED["source"]["paper"]
    for name, table in PUBLISHED["tables"].items():
        assert table["rows"], name
        for row in table["rows"]:
            assert len(row["values"]) == len(table["columns"]), (name, row["model"])


def test_published_averages_are_row_means_except_the_flagged_rows():
    table = PUBLISHED["tables"]["table1"]
    flagged = set(PUBLISHED["source"]["inconsistent_rows"]["table1"])
    for row in table["rows"]:
        mean = sum(row["values"][:8]) / 8
        if row["model"] in flagged:
            assert abs(mean - row["values"][8]) > 0.1, row["model"]
        else:
            assert mean == pytest.approx(row["values"][8], abs=0.051), row["model"]
    omvqa = {r["model"]: r["values"][7] for r in table["rows"]}
    for row in PUBLISHED["tables"]["table9"]["rows"]:
        if row["model"] not in flagged | {"Unified-IO 2"}:
            assert row["values"][-1] == omvqa[row["model"]], row["model"]


def test_healthgpt_m3_published_row_as_printed():
    rows = {r["model"]: r["values"] for r in PUBLISHED["tables"]["table1"]["rows"]}
    assert rows["HealthGPT-M3"] == [73.7, 55.9, 74.6, 56.4, 78.7, 39.7, 43.3, 68.5, 61.3]
    sr = {r["model"]: r["values"] for r in PUBLISHED["tables"]["table3"]["rows"]}
    assert sr["HealthGPT-M3"] == [78.19, 32.76, 34.47, 12.02]


def cell(value, n=10):
    return {"value": value, "n": n, "ci": [value - 5, value + 5]}


SEVEN = ("CT", "X-Ray", "Fundus", "Microscopy", "OCT", "MRI", "Ultrasound")


def with_fdm(modality="Fundus"):
    """The published tables with FDM mapped, so that OMVQA can have all seven columns."""
    published = copy.deepcopy(PUBLISHED)
    published["tables"]["table9"]["modality_of_column"]["FDM"] = modality
    return published


def full_run(value=60.0, n=10):
    scores = {"close": cell(50.0, n), "all": cell(40.0, 2 * n)}
    vqa = {"benchmarks": {b: {**scores, "llava_med": scores} for b in TABLE1_BENCHMARKS}}
    counts = {"n": n, "n_open": 0, "random_choices": 0, "unparsed": 0}
    omni = {**counts, "by_modality": {m: cell(value, n) for m in SEVEN}}
    mmmu = {**counts, "accuracy": cell(30.0, n)}
    mcq = {"benchmarks": {"mmmu_med": mmmu, "omnimedvqa": omni}}
    return vqa, mcq


def test_table1_average_only_when_all_eight_cells_exist():
    vqa, mcq = full_run()
    partial = table1_values(vqa, None)
    assert [c["value"] for c in partial[:6]] == [50.0, 40.0] * 3
    assert partial[6:] == [None, None, None]
    values = [c["value"] for c in table1_values(vqa, mcq, published=with_fdm())]
    assert values[6:8] == [30.0, 60.0]
    assert values[-1] == pytest.approx((3 * 90 + 90) / 8, abs=0.01)


def test_partial_omvqa_is_not_compared_and_average_refuses():
    """FDM is unmapped: OMVQA has 6 of 7 columns; the Avg. must not be compared with the
    paper's."""
    vqa, mcq = full_run()
    cells = table1_values(vqa, mcq, published=PUBLISHED)
    assert cells[7]["value"] == 60.0 and cells[8] is None
    text = render_report({**vqa, "model": "m"}, {**mcq, "model": "m"}, None, PUBLISHED)
    row = next(line for line in text.splitlines() if "LLaVA-Med scorer |" in line)
    assert "[6 of 7 columns; not comparable with the paper]" in row
    assert "– (OMVQA has 6 of 7 columns: not comparable) |" in row


def test_zero_accuracy_cells_are_shown_not_dropped():
    """An OMVQA of exactly 0.0 showed as "– (not run)"."""
    vqa, mcq = full_run(value=0.0)
    cells = table1_values(vqa, mcq, published=with_fdm())
    assert cells[7]["value"] == 0.0 and cells[8] is not None
    text = render_report({**vqa, "model": "m"}, {**mcq, "model": "m"}, None, with_fdm())
    row = next(line for line in text.splitlines() if "LLaVA-Med scorer |" in line)
    assert "0.0 (n=70;" in row


def test_average_counts_distinct_questions_and_does_not_assume_independence():
    """Avg.'s n added close and all (close questions are among all) and its interval shrank
    as if the eight cells were independent."""
    vqa, mcq = full_run(n=10)
    average = table1_values(vqa, mcq, published=with_fdm())[8]
    assert average["n"] == 3 * 20 + 10 + 7 * 10  # every "all", MMMU, OMVQA's questions
    omvqa_half = math.sqrt(7 * 25) / 7
    expected_half = (7 * 5 + omvqa_half) / 8  # the cells' half-widths, averaged
    assert average["ci"][1] - average["value"] == pytest.approx(expected_half, abs=0.01)


def test_unconfigured_pathvqa_and_medical_column():
    """A PathVQA never configured said "not run"; this run's Medical column was always ✓."""
    vqa = {
        "model": "m",
        "medical": None,
        "benchmarks": {"vqa_rad": {"close": cell(50.0), "all": cell(62.5), "llava_med": {}}},
        "notes": ["pathvqa: not configured (set roots.pathvqa ...)"],
    }
    row = next(
        line
        for line in render_report(vqa, None, None, PUBLISHED).splitlines()
        if "strict scorer |" in line
    )
    assert row.count("– (not configured)") == 2 and "| ? |" in row
    assert medical_mark({**vqa, "medical": True}) == "✓"
    assert medical_mark({**vqa, "medical": False}) == "✗"


def test_report_with_partial_results_shows_reasons_sizes_and_run_rows():
    vqa = {
        "model": "stub",
        "benchmarks": {"vqa_rad": {"close": cell(50.0), "all": cell(62.5), "llava_med": {}}},
        "notes": [],
    }
    generation = {
        "model": "stub",
        "columns": {
            "reconstruction": {
                "n": 1,
                "by_source": {"ixi": {"n": 1, "ssim": cell(50.0, 1), "psnr": None}},
            },
        },
        "notes": ["LPIPS skipped: not installed"],
    }
    text = render_report(vqa, None, generation, PUBLISHED)
    for title in ("Table 1", "Table 2", "Table 3", "Table 9"):
        assert title in text
    strict = next(line for line in text.splitlines() if "strict scorer |" in line)
    # M3 published 73.7 and 55.9: the first gap (23.7) exceeds the width (10), the second not
    assert "| 50.0 (n=10; 45.0–55.0) | 62.5 (n=10; 57.5–67.5) ⚠ |" in strict
    assert "| – (not configured) |" not in strict and "| – (not run) |" in strict
    assert "| reconstruction | ixi | 1 | 50.00 (n=1; 45.00–55.00) |" in text
    assert "LPIPS skipped" in text
    assert "- multiple choice: not run" in text
    assert "### Method" in text and "11x11 Gaussian window" in text
