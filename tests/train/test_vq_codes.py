"""The vq_codes store: computed once, read by a stage without encoding, resumable, keyed by
the tokenizer, the preset's preprocessing and the images only; and the training targets made
as the preset's inference makes codes."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from healthgpt.data.decode.imaging import decode_rgb
from healthgpt.data.schema import SAMPLE_SCHEMA, image_value
from healthgpt.data.shards import ShardWriter, open_shard
from healthgpt.model import GENERATION, codes_to_text
from healthgpt.train import vq_codes
from healthgpt.train.data import iter_rows
from healthgpt.train.model_api import TARGET_COLUMNS, build_bundle, target_image_bytes
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


PAD, STRETCH = "pad", "stretch"  # the tiny preset's, the released weights' (m3, l14)


def _bundle(vq_dir: Path, vq_preprocess: str = PAD):
    bundle = build_bundle("tiny", 256, 0.0, 0, vq_dir)
    bundle.model.config.vq_preprocess = vq_preprocess
    return bundle


def _compute(mixture: Path, vq_dir: Path, vq_preprocess: str = PAD, **kwargs):
    kwargs.setdefault("log", lambda m: None)
    return vq_codes.compute(mixture, vq_dir, ("stage1",), vq_preprocess=vq_preprocess, **kwargs)


def _load(mixture: Path, vq_dir: Path, vq_preprocess: str = PAD):
    return vq_codes.load_codes(mixture, mixture / "stage1", vq_hash(vq_dir), vq_preprocess)


def test_computed_once_each_distinct_image_once(mixture: Path, vq_dir: Path):
    first = _compute(mixture, vq_dir)
    assert first.samples == 2 * 6 + 2  # generation rows: train doubled, test once
    assert first.images == 6 + 2 and first.images_encoded == first.images
    again = _compute(mixture, vq_dir)
    assert again.images_encoded == 0 and again.data_version == first.data_version

    codes = _load(mixture, vq_dir)
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
    _compute(mixture, vq_dir)
    metrics = stage("after")
    assert metrics["images_encoded"] == 0
    assert any("read from vq_codes" in line for line in lines)
    assert 0.0 <= metrics["padding_fraction"] < 1.0
    assert set(metrics["padding_fraction_per_family"]) <= {"comprehension", "generation"}


def test_resumes_after_a_crash_keeping_finished_chunks(mixture: Path, vq_dir: Path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        _compute(mixture, vq_dir, chunk_images=3, crash_after_chunks=2)
    store = vq_codes.store_dir(mixture, vq_hash(vq_dir), PAD)
    assert len(vq_codes.chunk_files(store)) == 2
    assert _load(mixture, vq_dir) is None
    resumed = _compute(mixture, vq_dir, chunk_images=3)
    assert resumed.images_encoded == resumed.images - 6
    assert _load(mixture, vq_dir) is not None


def test_invalidated_by_the_tokenizer_not_by_other_fields(
    mixture: Path, vq_dir: Path, tmp_path: Path
):
    first = _compute(mixture, vq_dir)
    # An unrelated field changes (the source name of every row): no image is encoded again.
    data = mixture / "stage1" / "data"
    table = open_shard(data / "test-00000.parquet").read()
    column = table.schema.get_field_index("source")
    table = table.set_column(column, "source", pa.array(["renamed"] * table.num_rows))
    (data / "test-00000.parquet").unlink()
    with ShardWriter(data, SAMPLE_SCHEMA, prefix="test") as writer:
        for row in table.to_pylist():
            writer.write(row)
    same = _compute(mixture, vq_dir)
    assert same.images_encoded == 0 and same.data_version == first.data_version
    assert _load(mixture, vq_dir) is not None
    # Another tokenizer: a new store, every image encoded, another data version.
    other = tmp_path / "other_vq"
    train_small_vq(mixture, other, steps=1, batch=4, seed=1)
    assert vq_hash(other) != vq_hash(vq_dir)
    assert _load(mixture, other) is None
    changed = _compute(mixture, other)
    assert changed.images_encoded == changed.images == first.images
    assert changed.data_version != first.data_version


def test_asset_materializes_with_a_data_version(mixture: Path, vq_dir: Path, tmp_path: Path):
    """The asset encodes as the configured model preset does: m3 stretches."""
    import dagster as dg

    from pipelines.resources import DataLocations
    from pipelines.training import vq_codes_asset

    data = tmp_path / "data"
    shutil.copytree(vq_dir, data / "checkpoints" / "vq_tokenizer")
    result = dg.materialize(
        [vq_codes_asset],
        resources={"locations": DataLocations(data_dir=str(data))},
        run_config={
            "ops": {"vq_codes": {"config": {"mixture_dir": str(mixture), "model_preset": "m3"}}}
        },
    )
    assert result.success
    materialization = result.asset_materializations_for_node("vq_codes")[0]
    assert materialization.metadata["images_encoded"].value == 8
    assert materialization.tags["dagster/data_version"]
    assert _load(mixture, vq_dir, STRETCH) is not None
    assert _load(mixture, vq_dir, PAD) is None


def _wide(png: bytes) -> bytes:
    """The top half of an image: not square, so padding and stretching give other codes."""
    image = decode_rgb(png)
    buffer = io.BytesIO()
    image.crop((0, 0, image.width, image.height // 2)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def wide_mixture(mixture: Path) -> Path:
    """`mixture` with every generation target cut to twice as wide as high."""
    data = mixture / "stage1" / "data"
    for path in sorted(data.glob("*.parquet")):
        rows = open_shard(path).read().to_pylist()
        path.unlink()
        with ShardWriter(data, SAMPLE_SCHEMA, prefix=path.name.split("-")[0]) as writer:
            for row in rows:
                if row["task_family"] == GENERATION:
                    row["target_image"] = image_value(_wide(target_image_bytes(row)))
                writer.write(row)
    return mixture


def _target_rows(mixture: Path) -> list[dict]:
    files = sorted((mixture / "stage1" / "data").glob("*.parquet"))
    return list(iter_rows(files, TARGET_COLUMNS, GENERATION))


@pytest.mark.parametrize("preprocess", [PAD, STRETCH])
def test_training_targets_are_the_codes_inference_makes(
    wide_mixture: Path, vq_dir: Path, preprocess: str
):
    """A target's code text is what `image_to_codes` gives under the preset's preprocessing
    (stretched for m3/l14 as the official code does), never the other mode's."""
    bundle = _bundle(vq_dir, preprocess)
    rows = _target_rows(wide_mixture)
    bundle.add_target_codes(rows)
    other = _bundle(vq_dir, STRETCH if preprocess == PAD else PAD)
    for row in rows:
        image = decode_rgb(target_image_bytes(row))
        assert image.width == 2 * image.height
        expected = codes_to_text(bundle.model.image_to_codes(image)[0])
        assert bundle.target_codes[row["id"]] == expected
        assert codes_to_text(other.model.image_to_codes(image)[0]) != expected


def test_codes_of_one_preprocessing_are_never_read_for_the_other(wide_mixture: Path, vq_dir: Path):
    padded = _compute(wide_mixture, vq_dir, PAD)
    assert _load(wide_mixture, vq_dir, STRETCH) is None
    stretched = _compute(wide_mixture, vq_dir, STRETCH)
    assert stretched.images_encoded == stretched.images == padded.images
    assert stretched.store != padded.store and stretched.data_version != padded.data_version
    assert (padded.vq_preprocess, stretched.vq_preprocess) == (PAD, STRETCH)
    rows = _target_rows(wide_mixture)
    for preprocess in (PAD, STRETCH):
        reference = _bundle(vq_dir, preprocess)
        reference.add_target_codes(rows)
        stored = _bundle(vq_dir, preprocess)
        stored.set_target_codes(_load(wide_mixture, vq_dir, preprocess))
        assert stored.target_codes == reference.target_codes
    # A store whose manifest records the other preprocessing is not read.
    store = Path(stretched.store)
    for manifest in store.glob("*.json"):
        manifest.write_text(manifest.read_text().replace(f'"{STRETCH}"', f'"{PAD}"'))
    assert _load(wide_mixture, vq_dir, STRETCH) is None
    with pytest.raises(ValueError, match="vq_preprocess must be one of"):
        vq_codes.store_dir(wide_mixture, vq_hash(vq_dir), "crop")


def test_the_stage_reads_the_codes_of_its_preset_preprocessing(
    wide_mixture: Path, vq_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A stage of a stretching preset ignores padded codes and encodes stretched targets."""
    from healthgpt.train import run as run_module

    real = run_module.build_bundle

    def stretching(*args, **kwargs):
        bundle = real(*args, **kwargs)
        bundle.model.config.vq_preprocess = STRETCH
        return bundle

    monkeypatch.setattr(run_module, "build_bundle", stretching)
    _compute(wide_mixture, vq_dir, PAD)
    overrides = {"max_steps": 1, "eval_samples": 2, "max_new_tokens": 1, "num_workers": 0}
    lines: list[str] = []
    spec = RunSpec("stage1", wide_mixture, tmp_path / "out", vq_dir=vq_dir, overrides=overrides)
    metrics = run_stage(spec, Reporter(log=lines.append))
    assert metrics["images_encoded"] > 0
    assert any("no vq_codes for this subset, tokenizer and stretch" in line for line in lines)


@pytest.mark.parametrize("sha", ["", "../../../../tmp/", "/etc/evil/x", "AB" * 32, "a" * 63])
def test_the_store_is_named_only_by_a_real_sha256(tmp_path, sha):
    with pytest.raises(ValueError, match="sha256"):
        vq_codes.store_dir(tmp_path / "mixture", sha, PAD)
