"""benchmarks.timing: variants interleave A B A B, repeats are kept per variant, spread and
ratios come from them, and a printed result carries the machine load."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import timing
from benchmarks.timing import (
    _OTHER_ALLOCATORS,
    interleave,
    interleave_both,
    print_result,
    ratio,
    spread,
    summary,
)


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
    assert out["round_ratio_iqr"] == [pytest.approx(2.0), pytest.approx(2.2)]  # min-max
    rounds = ratio({"a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [1.0] * 5}, "a", "b")
    assert rounds["round_ratio_iqr"] == [pytest.approx(1.5), pytest.approx(4.5)]
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


GLIBC = platform.libc_ver()
OTHER_ALLOCATOR = any(n in os.environ.get("LD_PRELOAD", "") for n in _OTHER_ALLOCATORS)


@pytest.mark.skipif(GLIBC[0] != "glibc" or OTHER_ALLOCATOR, reason="mallopt is glibc's")
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
    assert plain >= 20  # every 64 MB block faulted in afresh (4 kB or huge pages)
    assert steady < plain // 20


class _GlibcBefore235:
    """glibc's mallopt before 2.35: an mmap threshold above 32 MB is refused (returns 0),
    every other setting accepted."""

    def __init__(self, name: str | None) -> None:
        self.calls: list[tuple[int, int]] = []

        def mallopt(parameter: int, value: int) -> int:
            self.calls.append((parameter, value))
            return 0 if parameter == -3 and value > 32 << 20 else 1

        self.mallopt = mallopt


def test_steady_allocator_asks_only_what_every_glibc_grants(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(timing.ctypes, "CDLL", _GlibcBefore235)
    assert timing.steady_allocator()
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert not timing.steady_allocator()


@pytest.mark.skipif(
    GLIBC[0] != "glibc" or OTHER_ALLOCATOR or tuple(map(int, GLIBC[1].split(".")[:2])) < (2, 35),
    reason="glibc.malloc.hugetlb is a glibc 2.35 tunable",
)
def test_the_steady_allocator_check_holds_with_huge_pages(monkeypatch):
    """With malloc's memory on huge pages (as with transparent huge pages set to 'always'),
    a 64 MB block faults in as 2 MB pages: far fewer faults, the same conclusion."""
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    test_steady_allocator_keeps_freed_memory_for_reuse()
