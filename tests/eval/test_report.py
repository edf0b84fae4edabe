import pytest

from healthgpt.eval.report import (
    load_published,
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


def test_table1_average_only_when_all_eight_cells_exist():
    scores = {"close": cell(50.0), "all": cell(40.0)}
    vqa = {"benchmarks": {n: {**scores, "llava_med": scores} for n in TABLE1_BENCHMARKS}}
    partial = table1_values(vqa, None)
    assert [c["value"] for c in partial[:6]] == [50.0, 40.0] * 3
    assert partial[6:] == [None, None, None]
    omni = {"accuracy": cell(10.0), "macro_modality": 60.0, "by_modality": {"CT": cell(60.0)}}
    mcq = {"benchmarks": {"mmmu_med": {"accuracy": cell(30.0)}, "omnimedvqa": omni}}
    values = [c["value"] for c in table1_values(vqa, mcq)]
    assert values[6:8] == [30.0, 60.0]
    assert values[-1] == pytest.approx((3 * 90 + 90) / 8, abs=0.01)


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
