"""Bundled sample sources: each official layout in miniature, built from real images that
ship inside PyPI packages (pydicom, pydicom-data, nibabel, nilearn, scikit-image).

`build_sample_sources(dest)` writes one directory per source under `dest`, named like the
registry in `healthgpt.data.sources`. Each builder is deterministic.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# source name -> module under healthgpt.data.samples with a `build(dest: Path) -> None`, or
# `module:function` for a module that builds several sources
BUILDERS: dict[str, str] = {
    "vqa_rad": "vqa_rad",
    "slake": "slake",
    "pathvqa": "pathvqa",
    "mimic_cxr": "mimic_cxr",
    "llava_json": "llava_json",
    "ixi": "ixi",
    "synthrad2023": "synthrad",
    "dicom_folder": "dicom_folder",
    "nifti_folder": "nifti_folder",
    "llava_558k": "llava_sets:build_llava_558k",
    "pubmedvision": "llava_sets:build_pubmedvision",
    "llava_med": "llava_sets:build_llava_med",
    "vl_health_alignment": "vl_health:build_alignment",
    "vl_health_reconstruction": "vl_health:build_reconstruction",
    "vl_health_comprehension": "vl_health:build_comprehension",
    "vl_health_generation": "vl_health:build_generation",
}


def build_sample_source(name: str, dest: Path) -> Path:
    """Build one source's sample layout at `dest / name` and return that path."""
    module_name, _, function = BUILDERS[name].partition(":")
    module = importlib.import_module(f"healthgpt.data.samples.{module_name}")
    target = Path(dest) / name
    target.mkdir(parents=True, exist_ok=True)
    getattr(module, function or "build")(target)
    return target


def build_sample_sources(dest: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build every (or the named) sample source under `dest`."""
    return {name: build_sample_source(name, dest) for name in (names or list(BUILDERS))}
