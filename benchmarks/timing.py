"""How every benchmark times variants, so its figures hold on a shared, drifting machine.

- Variants run interleaved, A B A B ..., never all A then all B: a load change during the run
  hits every variant alike, and a ratio of medians cancels it.
- At least `MIN_REPEATS` timed repeats per variant; the median is the figure, and the spread
  (max - min over the median) says how far to trust it.
- Two clocks: wall time, and the CPU time of this process (which other processes on the
  machine barely disturb when the work runs on one thread).
- The machine load (`os.getloadavg`) before and after goes into every printed result.
- `steady_allocator()`: glibc keeps freed memory instead of unmapping it, so a step that
  allocates large tensors does not page-fault them in afresh on every repeat (measured on a
  training step: 7% of its CPU time in the kernel, and the step time's spread 23-37% with
  the default allocator against 13-21% without the faults).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from healthgpt.progress import Progress

MIN_REPEATS = 5


def machine_load() -> dict[str, float]:
    """The 1, 5 and 15 minute load averages and the CPU count (load / cpus > 1: contended)."""
    one, five, fifteen = os.getloadavg()
    return {"load_1m": one, "load_5m": five, "load_15m": fifteen, "cpus": os.cpu_count() or 1}


# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def steady_allocator() -> bool:
    """Make glibc malloc reuse freed memory instead of returning it to the kernel (no mmap
    per large block, no trimming); affects allocations from now on, for the whole process
    (`run_all` sets it once, so every benchmark runs with it). False where it cannot: the C
    library is not glibc, or another allocator is preloaded (its malloc ignores mallopt)."""
    if any(name in os.environ.get("LD_PRELOAD", "") for name in _OTHER_ALLOCATORS):
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # No mmap at all rather than a high mmap threshold: glibc before 2.35 caps the threshold
    # at 32 MB on 64-bit and refuses more.
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 1 << 28))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: 0.05 means the repeats lie within 5% of the median."""
    if not values:
        return 0.0
    median = statistics.median(values)
    return (max(values) - min(values)) / median if median else 0.0


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max, spread and count of one variant's repeats."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "spread": spread(values),
        "n": len(values),
    }


def interleave(
    variants: Mapping[str, Callable[[], object]],
    repeats: int = MIN_REPEATS,
    warmup: int = 0,
    what: str = "timing",
    cpu: bool = False,
) -> dict[str, list[float]]:
    """Run each variant `warmup` untimed then `repeats` timed times, in rounds A B A B ...;
    return the wall seconds per variant (CPU seconds of this process with `cpu`).

    A variant that runs asynchronous work (a GPU) must synchronize before it returns."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    clock = time.process_time if cpu else time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in variants}
    rounds = warmup + repeats
    with Progress(what, rounds * len(variants), "runs", every=5.0) as progress:
        for round_ in range(rounds):
            for name, run in variants.items():
                start = clock()
                run()
                elapsed = clock() - start
                if round_ >= warmup:
                    times[name].append(elapsed)
                progress.update(round=round_ + 1)
    return times


def interleave_both(
    variants: Mapping[str, Callable[[], object]],
    repeats: int = MIN_REPEATS,
    warmup: int = 0,
    what: str = "timing",
) -> dict[str, dict[str, list[float]]]:
    """Like `interleave`, with both clocks per run: {variant: {"wall": [...], "cpu": [...]}}."""
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in variants}

    def timed(name: str, run: Callable[[], object]) -> Callable[[], None]:
        def go() -> None:
            cpu = time.process_time()
            wall = time.perf_counter()
            run()
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)

        return go

    interleave({n: timed(n, r) for n, r in variants.items()}, repeats, warmup, what)
    for samples in times.values():  # drop the warmup runs
        for clock in samples:
            del samples[clock][:warmup]
    return times


def ratio(times: Mapping[str, Sequence[float]], variant: str, baseline: str) -> dict[str, Any]:
    """Median of `variant` over median of `baseline`, and the per-round ratios (each round's A
    over the same round's B: what drift between rounds cannot move): their median, spread,
    and interquartile range (where the middle half lie; min-max under 4 rounds)."""
    per_round = [a / b for a, b in zip(times[variant], times[baseline], strict=True)]
    if len(per_round) < 4:
        iqr = [min(per_round), max(per_round)]
    else:
        low, _, high = statistics.quantiles(per_round, n=4)
        iqr = [low, high]
    return {
        "ratio": statistics.median(times[variant]) / statistics.median(times[baseline]),
        "round_ratio_median": statistics.median(per_round),
        "round_ratio_spread": spread(per_round),
        "round_ratio_iqr": iqr,
    }


def print_result(name: str, result: dict[str, Any], load_before: dict[str, float]) -> str:
    """Print one JSON line `{"benchmark": name, ..., "load_before", "load_after"}`; return it."""
    line = json.dumps(
        {"benchmark": name, **result, "load_before": load_before, "load_after": machine_load()},
        sort_keys=True,
        default=str,
    )
    print(line, flush=True)
    return line
