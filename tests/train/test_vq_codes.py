"""The vq_codes store: computed once, read by a stage without encoding, resumable, keyed by
the tokenizer and the images only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from healthgpt.data.schema import SAMPLE_SCHEMA
from healthgpt.data.shards import ShardWriter, open_shard
from healthgpt.model import GENERATION
from healthgpt.train import vq_codes
from healthgpt.train.data import iter_rows
from healthgpt.train.model_api import TARGET_COLUMNS, build_bundle
from healthgpt.train.run import Reporter, RunSpec, run_stage
from healthgpt.train.synthetic import write_synthetic_mixture
from healthgpt.train.vq_assets import train_small_vq, vq_hash


@pytest.fixture
def mixture(tmp_path: Path) -> Path:
    """One small subset; every target image of stage1's train split appears twice."""
    root = write_synthetic_mixture(tmp_path / "mixture", train=6, test=2, subsets=("stage1",))
    data = root / "stage1" / "data"
    rows = open_shard(data / "train-00000.parquet").read().to_pylist()
    (data / "train-00000.parquet").unlink()
    with ShardWriter(data, SAMPLE_SCHEMA, prefix="train") as writer:
        for row in rows + [{**row, "id": f"copy-{row['id']}"} for row in rows]:
            writer.write(row)
    return root


def _bundle(vq_dir: Path):
    return build_bundle("tiny", 256, 0.0, 0, vq_dir)


def test_computed_once_each_distinct_image_once(mixture: Path, vq_dir: Path):
    first = vq_codes.compute(mixture, vq_dir, subsets=("stage1",), log=lambda m: None)
    assert first.samples == 2 * 6 + 2  # generation rows: train doubled, test once
    assert first.images == 6 + 2 and first.images_encoded == first.images
    again = vq_codes.compute(mixture, vq_dir, subsets=("stage1",), log=lambda m: None)
    assert again.images_encoded == 0 and again.data_version == first.data_version

    codes = vq_codes.load_codes(mixture, mixture / "stage1", vq_hash(vq_dir))
    reference = _bundle(vq_dir)
    files = sorted((mixture / "stage1" / "data").glob("*.parquet"))
    rows = iter_rows(files, TARGET_COLUMNS, GENERATION)
    encoded = reference.add_target_codes(rows, batch_size=3)
    assert encoded == 8  # the fallback encodes each distinct image once too
    stored = _bundle(vq_dir)
    stored.set_target_codes(codes)
    assert stored.target_codes == reference.target_codes
    assert stored.images_encoded == 0


def test_stage_reads_codes_and_encodes_nothing(mixture: Path, vq_dir: Path, tmp_path: Path):
    overrides = {"max_steps": 1, "eval_samples": 2, "max_new_tokens": 1, "num_workers": 0}
    lines: list[str] = []

    def stage(out: str) -> dict:
        spec = RunSpec("stage1", mixture, tmp_path / out, vq_dir=vq_dir, overrides=overrides)
        return run_stage(spec, Reporter(log=lines.append))

    standalone = stage("before")
    assert standalone["images_encoded"] > 0
    assert any("no vq_codes for this subset" in line for line in lines)
    vq_codes.compute(mixture, vq_dir, subsets=("stage1",), log=lambda m: None)
    metrics = stage("after")
    assert metrics["images_encoded"] == 0
    assert any("read from vq_codes" in line for line in lines)
    assert 0.0 <= metrics["padding_fraction"] < 1.0
    assert set(metrics["padding_fraction_per_family"]) <= {"comprehension", "generation"}


def test_resumes_after_a_crash_keeping_finished_chunks(mixture: Path, vq_dir: Path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        vq_codes.compute(
            mixture, vq_dir, ("stage1",), log=lambda m: None, chunk_images=3, crash_after_chunks=2
        )
    store = vq_codes.store_dir(mixture, vq_hash(vq_dir))
    assert len(vq_codes.chunk_files(store)) == 2
    assert vq_codes.load_codes(mixture, mixture / "stage1", vq_hash(vq_dir)) is None
    resumed = vq_codes.compute(mixture, vq_dir, ("stage1",), log=lambda m: None, chunk_images=3)
    assert resumed.images_encoded == resumed.images - 6
    assert vq_codes.load_codes(mixture, mixture / "stage1", vq_hash(vq_dir)) is not None


def test_invalidated_by_the_tokenizer_not_by_other_fields(
    mixture: Path, vq_dir: Path, tmp_path: Path
):
    first = vq_codes.compute(mixture, vq_dir, ("stage1",), log=lambda m: None)
    # An unrelated field changes (the source name of every row): no image is encoded again.
    data = mixture / "stage1" / "data"
    table = open_shard(data / "test-00000.parquet").read()
    column = table.schema.get_field_index("source")
    table = table.set_column(column, "source", pa.array(["renamed"] * table.num_rows))
    (data / "test-00000.parquet").unlink()
    with ShardWriter(data, SAMPLE_SCHEMA, prefix="test") as writer:
        for row in table.to_pylist():
            writer.write(row)
    same = vq_codes.compute(mixture, vq_dir, ("stage1",), log=lambda m: None)
    assert same.images_encoded == 0 and same.data_version == first.data_version
    assert vq_codes.load_codes(mixture, mixture / "stage1", vq_hash(vq_dir)) is not None
    # Another tokenizer: a new store, every image encoded, another data version.
    other = tmp_path / "other_vq"
    train_small_vq(mixture, other, steps=1, batch=4, seed=1)
    assert vq_hash(other) != vq_hash(vq_dir)
    assert vq_codes.load_codes(mixture, mixture / "stage1", vq_hash(other)) is None
    changed = vq_codes.compute(mixture, other, ("stage1",), log=lambda m: None)
    assert changed.images_encoded == changed.images == first.images
    assert changed.data_version != first.data_version


def test_asset_materializes_with_a_data_version(mixture: Path, vq_dir: Path, tmp_path: Path):
    import dagster as dg

    from pipelines.resources import DataLocations
    from pipelines.training import vq_codes_asset

    data = tmp_path / "data"
    shutil.copytree(vq_dir, data / "checkpoints" / "vq_tokenizer")
    result = dg.materialize(
        [vq_codes_asset],
        resources={"locations": DataLocations(data_dir=str(data))},
        run_config={"ops": {"vq_codes": {"config": {"mixture_dir": str(mixture)}}}},
    )
    assert result.success
    materialization = result.asset_materializations_for_node("vq_codes")[0]
    assert materialization.metadata["images_encoded"].value == 8
    assert materialization.tags["dagster/data_version"]
    assert vq_codes.load_codes(mixture, mixture / "stage1", vq_hash(vq_dir)) is not None
