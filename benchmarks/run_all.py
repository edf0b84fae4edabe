"""Run every benchmark in turn (`make bench`); each prints a markdown table and writes JSON
to benchmarks/results/. Pass names to run a subset: `python -m benchmarks.run_all ingest`.
The machine load is printed before each one; `benchmarks/timing.py` is how they time."""

from __future__ import annotations

import importlib
import json
import sys
import time

from benchmarks.timing import machine_load, steady_allocator

BENCHMARKS = ("ingest", "mixture", "hlora", "train", "vq_codes", "padding")


def main(names: list[str]) -> None:
    steady_allocator()  # process-wide: set once, so no benchmark depends on the order
    for name in names or BENCHMARKS:
        print(f"\n## {name}\n", flush=True)
        print(json.dumps({"benchmark": name, "load_at_start": machine_load()}), flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.bench_{name}")
        saved = sys.argv
        sys.argv = [f"bench_{name}"]
        try:
            module.main()
        finally:
            sys.argv = saved
        print(f"\n({name}: {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
