"""Chunked ingestion: the chunks of a source partition its items exactly, and a changed file
moves the data version of the one chunk whose output it changes."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from healthgpt.data.ingest.checks import chunk_range
from healthgpt.data.samples import build_sample_source
from healthgpt.data.shards import read_manifest
from healthgpt.data.sources import SOURCES, ReaderOptions, reader_class
from healthgpt.data.sources.chunks import assign_chunks, chunk_of
from healthgpt.data.sources.fingerprint import iter_files
from tests.data.outputs import quarantine, records, run
from tests.data.sample_edits import add_mimic_study

N_CHUNKS = 3


def ingest_chunks(source: str, root: Path, out: Path) -> list[Path]:
    dirs = []
    for index in range(N_CHUNKS):
        directory = out / f"chunk={index:03d}"
        summary = run(source, root, directory, chunk=(index, N_CHUNKS))
        assert summary.chunk == (index, N_CHUNKS)
        dirs.append(directory)
    return dirs


def outputs(directory: Path) -> tuple[list[str], list[tuple[str, str]]]:
    ids = sorted(r["id"] for r in records(directory))
    rejected = sorted((q["item"], q["reason"]) for q in quarantine(directory))
    return ids, rejected


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_chunks_partition_the_items_of_every_source(source, tmp_path):
    root = build_sample_source(source, tmp_path / "sources")
    whole = run(source, root, tmp_path / "whole")
    chunks = ingest_chunks(source, root, tmp_path / "chunked")

    ids, rejected = Counter(), Counter()
    for directory in chunks:
        chunk_ids, chunk_rejected = outputs(directory)
        ids.update(chunk_ids)
        rejected.update(chunk_rejected)
    whole_ids, whole_rejected = outputs(tmp_path / "whole")
    assert ids == Counter(whole_ids), "every record in exactly one chunk"
    assert rejected == Counter(whole_rejected), "every quarantined item in exactly one chunk"
    summaries = [read_manifest(d)["summary"] for d in chunks]
    assert sum(s["items"] for s in summaries) == whole.items
    assert "other_chunks" not in summaries[0], "a chunk's manifest must not depend on others"


def test_a_chunk_option_outside_the_plan_is_refused():
    with pytest.raises(ValueError, match="chunk 3 does not exist among 3"):
        ReaderOptions(chunk=(3, 3))


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_changed_item_files_move_one_chunk_version_and_change_only_that_chunks_output(
    source, tmp_path, monkeypatch
):
    """For each chunk in turn: corrupt every file keyed to it. Its version must be the only
    one to move, and no other chunk's output may change (an item reading a file of another
    chunk would be left stale by the rebuild of exactly the changed chunks). One salt for
    every run: a changed sample is no longer a bundled sample, whose salt is public."""
    monkeypatch.setenv("HEALTHGPT_DEID_SALT", "one-salt-for-every-run-of-this-test")
    built = build_sample_source(source, tmp_path / "sources")
    reader = reader_class(source)(built)
    before = reader.chunk_versions(N_CHUNKS)
    assert before == reader.chunk_versions(N_CHUNKS), "touching nothing"
    first = [outputs(d) for d in ingest_chunks(source, built, tmp_path / "first")]
    keyed = {
        p.relative_to(built).as_posix(): reader.chunk_key(p.relative_to(built).as_posix())
        for p in iter_files(built)
    }
    effective = 0
    for index in range(N_CHUNKS):
        mine = [rel for rel, key in keyed.items() if key and chunk_of(key, N_CHUNKS) == index]
        if not mine:
            continue
        root = tmp_path / f"changed-{index}" / source
        shutil.copytree(built, root)
        for rel in mine:
            (root / rel).write_bytes(b"not an image any more")
        after = reader_class(source)(root).chunk_versions(N_CHUNKS)
        assert [i for i in range(N_CHUNKS) if after[i] != before[i]] == [index]
        second = [outputs(d) for d in ingest_chunks(source, root, tmp_path / f"out-{index}")]
        changed = [i for i in range(N_CHUNKS) if first[i] != second[i]]
        assert changed in ([], [index]), f"{source}: files of chunk {index} changed {changed}"
        effective += changed == [index]
    assert effective, f"{source}: no chunk's files fed any output; the test proves nothing"


def test_a_changed_listing_moves_every_chunk_version(tmp_path):
    root = build_sample_source("vqa_rad", tmp_path / "sources")
    reader = reader_class("vqa_rad")(root)
    before = reader.chunk_versions(N_CHUNKS)
    os.utime(next(root.glob("*.json")), ns=(2, 2))
    after = reader.chunk_versions(N_CHUNKS)
    assert all(a != b for a, b in zip(after, before, strict=True))


def test_mimic_tables_are_split_by_study_so_new_studies_move_only_their_chunk(tmp_path):
    root = build_sample_source("mimic_cxr", tmp_path / "sources")
    reader = reader_class("mimic_cxr")(root)
    before = reader.chunk_versions(N_CHUNKS)
    for table in root.glob("mimic-cxr-2.0.0-*.csv*"):
        os.utime(table, ns=(2, 2))
    assert reader.chunk_versions(N_CHUNKS) == before, "same rows, new mtime: nothing to rebuild"

    add_mimic_study(root, "19999999", "59999999", "abcdef01-new-image")
    after = reader.chunk_versions(N_CHUNKS)
    expected = chunk_of("files/p19/p19999999/s59999999", N_CHUNKS)
    assert [i for i in range(N_CHUNKS) if after[i] != before[i]] == [expected]


def test_mimic_study_files_and_reports_share_the_study_key(tmp_path):
    reader = reader_class("mimic_cxr")(tmp_path)
    study = "files/p10/p10000032/s50414267"
    assert reader.chunk_key(f"{study}/02aa804e.jpg") == study
    assert reader.chunk_key(f"{study}.txt") == study
    assert reader.chunk_key(f"mimic-cxr-reports/{study}.txt") == study
    assert reader.chunk_key("mimic-cxr-2.0.0-metadata.csv.gz") is None


def test_the_per_chunk_count_range_holds_correct_chunks_and_catches_lost_items():
    """Simulated sources of clustered records (1-30 records an item, like QA images and
    volumes): every correct chunk of 200 sources passes; a chunk missing half its items
    always fails, one missing a third nearly always."""
    rng = np.random.default_rng(0)
    n_chunks, failures, caught_half, caught_third = 4, 0, 0, 0
    for trial in range(200):
        per_item = rng.integers(1, 31, size=2000)
        chunks = assign_chunks([f"s{trial}/item-{i}" for i in range(2000)], n_chunks)
        total = int(per_item.sum())
        low, high = int(total * 0.97), int(total * 1.03)  # a manifest's range around the truth
        for index in range(n_chunks):
            mine = per_item[chunks == index]
            ratio = mine.sum() / len(mine)
            lo, hi = chunk_range(low, high, n_chunks, ratio)
            failures += not lo <= mine.sum() <= hi
            caught_half += not lo <= mine[: len(mine) // 2].sum() <= hi
            caught_third += not lo <= mine[: 2 * len(mine) // 3].sum() <= hi
    assert failures == 0
    assert caught_half == 200 * n_chunks
    assert caught_third >= 0.99 * 200 * n_chunks
