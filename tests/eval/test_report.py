import pytest

from healthgpt.eval.report import (
    DASH,
    load_published,
    render_report,
    table1_values,
)

PUBLISHED = load_published()


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


def test_table1_average_only_when_all_eight_cells_exist():
    vqa = {"benchmarks": {n: {"close": 50.0, "all": 40.0} for n in ("vqa_rad", "slake", "pathvqa")}}
    partial = table1_values(vqa, None)
    assert partial[:6] == [50.0, 40.0] * 3 and partial[6:] == [None, None, None]
    omni = {"accuracy": 10.0, "macro_modality": 60.0}  # OMVQA is the per-modality mean
    mcq = {"benchmarks": {"mmmu_med": {"accuracy": 30.0}, "omnimedvqa": omni}}
    values = table1_values(vqa, mcq)
    assert values[6:8] == [30.0, 60.0]
    assert values[-1] == pytest.approx((3 * 90 + 90) / 8)


def test_report_with_partial_results_shows_dashes_and_run_rows():
    vqa = {"model": "stub", "benchmarks": {"vqa_rad": {"close": 50.0, "all": 62.5}}, "notes": []}
    generation = {
        "model": "stub",
        "columns": {
            "ct2mri_brain": {"n": 2, "ssim": 100.0, "psnr": 100.0, "mse": 0.0, "lpips": None},
            "reconstruction": {"n": 1, "ssim": 50.0, "psnr": 20.0, "mse": 10.0, "lpips": None},
        },
        "notes": ["LPIPS skipped: not installed"],
    }
    text = render_report(vqa, None, generation, PUBLISHED)
    for title in ("Table 1", "Table 2", "Table 3", "Table 9"):
        assert title in text
    table1_row = next(line for line in text.splitlines() if line.startswith("|  | **this run"))
    assert "| 50.0 | 62.5 | – | – |" in table1_row
    table2_row = [line for line in text.splitlines() if "**this run (stub)**" in line][1]
    assert table2_row.startswith("| **this run (stub)** | 100.00 | 100.00 | 0.00 | – |")
    assert "Other image tasks" in text and "| reconstruction | 1 |" in text
    assert "LPIPS skipped" in text
    assert "multiple choice: not evaluated" in text
    assert text.count(DASH) > 10
    assert "### Method" in text and "11x11 Gaussian window" in text
