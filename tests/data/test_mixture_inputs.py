"""A mixture build reads each ingested source's manifest once and passes it on as a value."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from healthgpt.data import shards
from healthgpt.data.mixture.build import build_mixture
from healthgpt.data.mixture.card import manifests_dir, read_licenses
from healthgpt.data.mixture.config import sample_preset
from healthgpt.data.sources import SOURCES
from tests.data.mixture_helpers import standard_sources


def count_manifest_reads(monkeypatch) -> Counter[Path]:
    """Count `read_manifest` calls by directory, wherever a library module imported it."""
    reads: Counter[Path] = Counter()
    original = shards.read_manifest

    def counting(directory):
        reads[Path(str(directory)).resolve()] += 1
        return original(directory)

    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if name.startswith("healthgpt") and getattr(module, "read_manifest", None) is original:
            monkeypatch.setattr(module, "read_manifest", counting)
    return reads


def test_each_source_manifest_is_read_once_per_build(tmp_path, monkeypatch):
    dirs = standard_sources(tmp_path / "ingested")
    reads = count_manifest_reads(monkeypatch)
    summary = build_mixture(dirs, tmp_path / "mixture", sample_preset())
    assert summary.rows("stage3") > 0
    assert {path: reads[path.resolve()] for path in dirs.values()} == {
        path: 1 for path in dirs.values()
    }


def test_the_card_finds_the_checkout_data_manifests():
    """The card's default `data_manifests/` is the checkout's, wherever the module sits: every
    registered source has its license there."""
    directory = manifests_dir(None)
    assert {p.stem for p in directory.glob("*.yaml")} >= set(SOURCES)
    licenses = read_licenses(dict.fromkeys(SOURCES, directory / "not-ingested"), directory)
    assert all(licenses.values()), licenses
