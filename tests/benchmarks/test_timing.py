"""benchmarks.timing: variants interleave A B A B, repeats are kept per variant, spread and
ratios come from them, and a printed result carries the machine load."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.timing import interleave, interleave_both, print_result, ratio, spread, summary


def test_variants_run_interleaved_and_warmup_is_not_timed():
    calls: list[str] = []
    times = interleave(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1
    )
    assert calls == ["a", "b"] * 4
    assert [len(times["a"]), len(times["b"])] == [3, 3]
    assert all(t >= 0 for t in times["a"] + times["b"])


def test_both_clocks_drop_the_warmup():
    times = interleave_both({"a": lambda: sum(range(1000))}, repeats=5, warmup=2)
    assert len(times["a"]["wall"]) == len(times["a"]["cpu"]) == 5


def test_spread_summary_and_ratio():
    assert spread([1.0, 1.1, 0.9]) == pytest.approx(0.2)
    assert spread([]) == 0.0
    assert summary([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "spread": 1.0,
        "n": 3,
    }
    out = ratio({"a": [2.0, 4.0, 2.2], "b": [1.0, 2.0, 1.0]}, "a", "b")
    assert out["ratio"] == pytest.approx(2.2 / 1.0)
    assert out["round_ratio_median"] == pytest.approx(2.0)
    assert out["round_ratio_spread"] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        interleave({"a": lambda: None}, repeats=0)


def test_printed_result_records_the_load(capsys):
    before = {"load_1m": 1.0, "load_5m": 1.0, "load_15m": 1.0, "cpus": 2}
    line = print_result("x", {"value": 3}, before)
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(line)
    assert printed["benchmark"] == "x" and printed["value"] == 3
    assert printed["load_before"] == before
    assert set(printed["load_after"]) == set(before)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_steady_allocator_keeps_freed_memory_for_reuse():
    """After `steady_allocator`, freeing and re-allocating a large block faults no pages in
    again (in a child process: the setting lasts for the process)."""
    code = """
import resource
from benchmarks.timing import steady_allocator
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def churn():
    before = faults()
    for _ in range(20):
        block = bytearray(64 << 20)
        del block
    return faults() - before
plain = churn()
assert steady_allocator()
churn()
print(plain, churn())
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    plain, steady = map(int, done.stdout.split())
    assert plain > 20 * (64 << 20) // 4096 // 2  # every 64 MB block faulted in afresh
    assert steady < plain // 20
