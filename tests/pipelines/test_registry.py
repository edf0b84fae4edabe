"""The dataset registry drives the graph: one YAML file adds a dataset, with no code change."""

import io
import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from PIL import Image

from healthgpt import cli
from healthgpt.data.mixture.config import paper_preset
from healthgpt.data.options import ReaderOptions
from healthgpt.data.shards import shard_paths
from healthgpt.data.sources.registry import (
    REGISTRY_DIRS_ENV,
    RegistryError,
    load_entry,
    load_registry,
)
from pipelines import production
from pipelines.checks import CHECKS, _checks_factory
from pipelines.definitions import build_definitions, defs
from pipelines.mixture import MixtureBuildConfig
from pipelines.resources import DataLocations
from pipelines.sources import IngestConfig, _ingest_factory, ingested_key, source_key

NINE = (
    "dicom_folder",
    "ixi",
    "llava_json",
    "mimic_cxr",
    "nifti_folder",
    "pathvqa",
    "slake",
    "synthrad2023",
    "vqa_rad",
)

SECOND_CORPUS = """\
name: Another LLaVA-style corpus
source: my_llava
reader: llava_json
root: {default: corpora/mine}
options:
  image_size: 64
expected_counts:
  full: {records_min: 2, records_max: 2}
"""


@pytest.fixture
def extra_registry(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "registry"
    folder.mkdir()
    (folder / "my_llava.yaml").write_text(SECOND_CORPUS)
    monkeypatch.setenv(REGISTRY_DIRS_ENV, str(folder))
    return folder


def test_the_nine_datasets_keep_their_asset_keys_and_readers():
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    for name in NINE:
        assert {f"source/{name}", f"ingested/{name}"} <= keys
    registry = load_registry()
    assert {name: registry[name].reader for name in NINE} == {name: name for name in NINE}
    # the options the YAML files state are today's defaults: behaviour does not change
    assert all(registry[name].options == ReaderOptions() for name in NINE)


def test_a_registry_file_in_another_folder_adds_a_dataset_with_its_checks(extra_registry):
    entry = load_registry()["my_llava"]
    assert (entry.reader, entry.options.image_size) == ("llava_json", 64)
    built = build_definitions()
    graph = built.resolve_asset_graph()
    assert graph.get(ingested_key("my_llava")).parent_keys == {source_key("my_llava")}
    assert graph.get(source_key("my_llava")).is_observable
    checks = {key.name for key in graph.asset_check_keys if key.asset_key.path[-1] == "my_llava"}
    assert checks == set(CHECKS)
    mixture = graph.get(dg.AssetKey(["mixture", "stage3"]))
    assert ingested_key("my_llava") in mixture.parent_keys
    assert built.resolve_job_def("observe_sources").asset_layer.executable_asset_keys >= {
        source_key("my_llava")
    }
    assert ingested_key("my_llava") not in defs.resolve_asset_graph().get_all_asset_keys()


def write_corpus(root: Path) -> None:
    """Two LLaVA-style samples on one small image, and one sample naming a missing image."""
    root.mkdir(parents=True)
    Image.new("RGB", (32, 32), (120, 30, 200)).save(root / "a.png")
    turns = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A."}]
    samples = [
        {"id": i, "image": image, "conversations": turns}
        for i, image in enumerate(["a.png", "a.png", "missing.png"])
    ]
    (root / "data.json").write_text(json.dumps(samples))


def test_a_registered_dataset_is_ingested_under_its_own_name(tmp_path, extra_registry):
    write_corpus(tmp_path / "sources" / "corpora" / "mine")
    entry = load_registry()["my_llava"]
    locations = DataLocations(data_dir=str(tmp_path / "out"), sources_dir=str(tmp_path / "sources"))
    result = dg.materialize(
        [_ingest_factory(entry), _checks_factory(entry)],
        resources={"locations": locations},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert all(c.passed for c in checks.values()), checks
    # the counts come from the new file's expected_counts
    assert checks["counts_expected"].metadata["expected_max"].value == 2
    out = tmp_path / "out" / "ingested" / "my_llava"
    table = pq.read_table(shard_paths(out)[0], columns=["source", "image"])
    assert set(table.column("source").to_pylist()) == {"my_llava"}
    quarantine = pq.read_table(out / "quarantine.parquet", columns=["source"])
    assert set(quarantine.column("source").to_pylist()) == {"my_llava"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("source: bad\nreader: not_a_reader\n", "unknown reader 'not_a_reader'"),
        ("source: bad\n", "missing `reader:`"),
        ("reader: llava_json\n", "missing `source:`"),
        ("source: bad\nreader: slake\noptions: {langauge: en}\n", "unknown option 'langauge'"),
        ("source: bad\nreader: slake\noptions: {image_size: big}\n", "option image_size"),
        ("source: bad\nreader: slake\noptions: {deid_salt: x}\n", "unknown option 'deid_salt'"),
        ("source: other\nreader: slake\n", "must be named other.yaml"),
        ("source: bad\nreader: slake\nroot: {default: ../x}\n", "root.default"),
        ("source: bad\nreader: slake\noptions: {extra: {limits: {nope: 1}}}\n", "unknown limits"),
        ("- a list\n", "expected a mapping"),
        ("source: bad\nreader: slake\nroot: {env: HEALTHGPT_DEID_SALT}\n", "HEALTHGPT_SOURCE_*"),
        (
            "source: bad\nreader: slake\n"
            "options: {extra: {limits: {max_image_pixels: 1000000000000000}}}\n",
            "may only lower limits",
        ),
        ("source: bad\nreader: llava_json\noptions: {extra: {deid_salt: x}}\n", "deid_salt"),
        ("source: bad\nreader: slake\noptions: {extra: {image_root: x}}\n", "unknown extra keys"),
        ("source: bad\nreader: llava_json\noptions: {extra: {multi_image: first}}\n", "unknown"),
        ("source: bad\nreader: pubmedvision\noptions: {extra: {multi_image: firts}}\n", "firts"),
        ("source: bad\nreader: llava_json\noptions: {extra: {files: /etc/*.json}}\n", "relative"),
        (
            "source: bad\nreader: vl_health_alignment\noptions: {extra: {origin_patterns: [x]}}\n",
            "origin_patterns",
        ),
        ("source: bad\nreader: slake\nexpected_counts: {full: {items: many}}\n", "items"),
        ("source: bad\nreader: slake\nexpected_counts: {ful: {items: 1}}\n", "expected_counts"),
    ],
)
def test_a_bad_registry_file_is_a_clear_error_naming_it(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError, match="bad.yaml") as error:
        load_entry(path)
    assert problem in str(error.value)


def test_a_duplicate_dataset_name_or_missing_folder_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "vqa_rad.yaml").write_text("source: vqa_rad\nreader: vqa_rad\n")
    monkeypatch.setenv(REGISTRY_DIRS_ENV, str(tmp_path))
    with pytest.raises(RegistryError, match="'vqa_rad' is already registered"):
        load_registry()
    monkeypatch.setenv(REGISTRY_DIRS_ENV, str(tmp_path / "missing"))
    with pytest.raises(RegistryError, match="registry folder .*missing does not exist"):
        build_definitions()


def test_a_dataset_root_follows_the_settings(tmp_path, monkeypatch, extra_registry):
    entry = load_registry()["my_llava"]
    monkeypatch.setenv("HEALTHGPT_SOURCES_DIR", str(tmp_path / "all"))
    assert entry.root() == tmp_path / "all" / "corpora" / "mine"
    monkeypatch.setenv("HEALTHGPT_SOURCE_MY_LLAVA", str(tmp_path / "mine"))
    assert entry.root() == tmp_path / "mine"
    assert DataLocations(sources_dir=str(tmp_path / "s")).source_root(entry) == (
        tmp_path / "s" / "corpora" / "mine"
    )


def test_run_config_overrides_only_the_reader_options_it_names():
    base = ReaderOptions(language="zh", image_size=128, extra={"limits": {"max_text_chars": 9}})
    options = IngestConfig(image_size=64).reader_options(base)
    assert (options.image_size, options.language) == (64, "zh")
    assert options.extra == base.extra
    limited = IngestConfig(limits={"max_json_row_chars": 5}).reader_options(base)
    assert limited.extra["limits"] == {"max_text_chars": 9, "max_json_row_chars": 5}
    assert limited.image_size == 128


PROBED: list = []


@dg.asset
def mixture_probe(config: MixtureBuildConfig) -> None:
    """The mixture config as the mixture asset receives it from run config."""
    PROBED.append(config.mixture_config())


def test_mixture_run_config_naming_one_field_keeps_the_presets_other_values():
    """Through Dagster's run config: `seed` is named, the paper preset's `workers=0` stays."""
    run_config = {"ops": {"mixture_probe": {"config": {"preset": "paper", "seed": 7}}}}
    assert dg.materialize([mixture_probe], run_config=run_config).success
    config = PROBED.pop()
    assert (config.seed, config.workers, config.stage2_size) == (7, 0, 47_000)
    assert config.to_dict() == paper_preset(seed=7).to_dict()  # every other field as preset
    explicit = MixtureBuildConfig(preset="paper", workers=2).mixture_config()
    assert explicit.workers == 2


def test_the_mixture_preset_setting_is_read_when_the_config_is_used(monkeypatch):
    config = MixtureBuildConfig()
    monkeypatch.setenv("HEALTHGPT_MIXTURE_PRESET", "paper")
    assert config.preset_name() == "paper"
    assert config.mixture_config().workers == 0
    monkeypatch.setenv("HEALTHGPT_MIXTURE_PRESET", "nope")
    with pytest.raises(ValueError, match="'nope'"):
        config.mixture_config()


def test_production_pods_load_the_same_registry_folders(monkeypatch):
    monkeypatch.setenv(REGISTRY_DIRS_ENV, "/data/registry")
    assert production.data_env()[REGISTRY_DIRS_ENV] == "/data/registry"


def test_the_cli_ingests_a_registered_dataset_with_its_reader_and_options(tmp_path, extra_registry):
    root = tmp_path / "mine"
    write_corpus(root)
    out = tmp_path / "out"
    assert cli.main(["ingest", "my_llava", "--root", str(root), "--out", str(out), "--quiet"]) == 0
    table = pq.read_table(shard_paths(out)[0], columns=["source", "image"])
    assert set(table.column("source").to_pylist()) == {"my_llava"}
    png = table.column("image")[0].as_py()["bytes"]
    assert Image.open(io.BytesIO(png)).size == (64, 64), "the registry's image_size: 64"
    assert cli.main(["ingest", "nope", "--root", str(root), "--out", str(out)]) == 2


def test_a_dataset_name_with_a_trailing_newline_is_refused(tmp_path):
    path = tmp_path / "evil\n.yaml"
    path.write_text('source: "evil\\n"\nreader: slake\n')
    with pytest.raises(RegistryError, match="lower case letters"):
        load_entry(path)


def test_a_registry_file_may_lower_a_limit(tmp_path):
    path = tmp_path / "low.yaml"
    path.write_text("source: low\nreader: slake\noptions: {extra: {limits: {max_text_chars: 9}}}\n")
    assert load_entry(path).options.limits.max_text_chars == 9


def test_count_checks_read_the_expected_counts_through_the_registry_entry(tmp_path):
    from healthgpt.data.ingest.checks import expected_counts

    path = tmp_path / "counted.yaml"
    path.write_text("source: counted\nreader: slake\nexpected_counts: {full: {records_min: 3}}\n")
    entry = load_entry(path)
    assert expected_counts(entry, tmp_path) == ("full", {"records_min": 3})
    assert expected_counts(path, tmp_path) == ("full", {"records_min": 3})
    path.write_text("source: counted\nreader: slake\nexpected_counts: {full: {records_min: x}}\n")
    with pytest.raises(RegistryError, match="records_min"):
        expected_counts(path, tmp_path)
