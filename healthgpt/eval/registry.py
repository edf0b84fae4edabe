"""The benchmarks, declared once: what evaluation (`run`) and the Dagster wiring loop over.

A benchmark is a name, its family (which evaluation asset runs it), a reader (root + reading
options -> questions), a scorer (question + reply -> `Scored`), the published table cell it
fills and where its root comes from. Adding a benchmark is one `Benchmark` entry here plus
its reader (and, for a new table cell, its key in `published.yaml`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from healthgpt.data.mixture.config import MixtureConfig
from healthgpt.eval import mcq, vqa
from healthgpt.eval.predict import Scorer, TextItem


@dataclass
class ReadOptions:
    """What a reader may need besides the root: a cap for smoke runs, the training config
    (the trained question form), and a place to count skipped rows by reason."""

    limit: int = 0
    trained: MixtureConfig | None = None
    skips: dict[str, int] = field(default_factory=dict)


Reader = Callable[[Path, ReadOptions], Iterator[TextItem]]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark. `root` is "ingested" (read from the pipeline's ingested source of the
    same name) or "external" (a published layout at `env` or the config's `roots`)."""

    name: str
    family: str
    reader: Reader
    scorer: Scorer
    table_key: str
    root: str = "ingested"
    description: str = ""

    @property
    def env(self) -> str:
        return f"HEALTHGPT_{self.name.upper().removesuffix('_MED')}_DIR"


def _vqa_reader(name: str) -> Reader:
    def read(root: Path, options: ReadOptions) -> Iterator[TextItem]:
        return vqa.read_vqa_items(root, name, limit=options.limit, trained=options.trained)

    return read


def _read_mmmu(root: Path, options: ReadOptions) -> Iterator[TextItem]:
    return mcq.read_mmmu(root, mcq.MMMU_MEDICAL_SUBJECTS, "validation", options.limit)


def _read_omnimedvqa(root: Path, options: ReadOptions) -> Iterator[TextItem]:
    skips = mcq.OmniSkips(options.skips)
    return mcq.read_omnimedvqa(root, ("Open-access",), options.limit, skips)


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("vqa_rad", "vqa", _vqa_reader("vqa_rad"), vqa.vqa_scorer, "table1.vqa_rad"),
    Benchmark("slake", "vqa", _vqa_reader("slake"), vqa.vqa_scorer, "table1.slake"),
    Benchmark("pathvqa", "vqa", _vqa_reader("pathvqa"), vqa.vqa_scorer, "table1.pathvqa"),
    Benchmark(
        "mmmu_med",
        "mcq",
        _read_mmmu,
        mcq.score_mmmu,
        "table1.mmmu_med",
        root="external",
        description="MMMU validation, the 5 Health & Medicine subjects (150 questions)",
    ),
    Benchmark(
        "omnimedvqa",
        "mcq",
        _read_omnimedvqa,
        mcq.score_omnimedvqa,
        "table1.omvqa",
        root="external",
        description="OmniMedVQA open-access questions",
    ),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


def family(name: str) -> tuple[Benchmark, ...]:
    """The benchmarks one evaluation asset runs, in the report's order."""
    return tuple(b for b in BENCHMARKS if b.family == name)


def get(name: str) -> Benchmark:
    if name not in BY_NAME:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BY_NAME)}")
    return BY_NAME[name]
