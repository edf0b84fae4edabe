"""Source readers, one module per public source, looked up by name.

The registry holds import paths rather than classes so that naming one source does not
import every reader's dependencies.
"""

from __future__ import annotations

import importlib

from healthgpt.data.sources.base import (
    BadInput,
    LayoutError,
    Outcome,
    ReaderOptions,
    SourceReader,
)

SOURCES: dict[str, str] = {
    "vqa_rad": "healthgpt.data.sources.vqa_rad:VqaRadReader",
    "slake": "healthgpt.data.sources.slake:SlakeReader",
    "pathvqa": "healthgpt.data.sources.pathvqa:PathVqaReader",
    "mimic_cxr": "healthgpt.data.sources.mimic_cxr:MimicCxrReader",
    "ixi": "healthgpt.data.sources.ixi:IxiReader",
    "synthrad2023": "healthgpt.data.sources.synthrad:SynthRadReader",
    "llava_json": "healthgpt.data.sources.llava_json:LlavaJsonReader",
    "dicom_folder": "healthgpt.data.sources.dicom_folder:DicomFolderReader",
    "nifti_folder": "healthgpt.data.sources.nifti_folder:NiftiFolderReader",
    "llava_558k": "healthgpt.data.sources.llava_sets:Llava558kReader",
    "pubmedvision": "healthgpt.data.sources.llava_sets:PubMedVisionReader",
    "llava_med": "healthgpt.data.sources.llava_sets:LlavaMedReader",
    "vl_health_alignment": "healthgpt.data.sources.llava_sets:VlHealthAlignmentReader",
    "vl_health_comprehension": "healthgpt.data.sources.llava_sets:VlHealthComprehensionReader",
    "vl_health_reconstruction": (
        "healthgpt.data.sources.vl_health_generation:VlHealthReconstructionReader"
    ),
    "vl_health_generation": "healthgpt.data.sources.vl_health_generation:VlHealthGenerationReader",
}


def reader_class(name: str) -> type[SourceReader]:
    """The reader class registered under `name`."""
    try:
        module_name, class_name = SOURCES[name].split(":")
    except KeyError:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(sorted(SOURCES))}") from None
    return getattr(importlib.import_module(module_name), class_name)


__all__ = [
    "SOURCES",
    "BadInput",
    "LayoutError",
    "Outcome",
    "ReaderOptions",
    "SourceReader",
    "reader_class",
]
