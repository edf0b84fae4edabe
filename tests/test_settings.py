"""Settings: every HEALTHGPT_* variable is read in `healthgpt.settings`, and only when asked."""

import ast
from pathlib import Path

import pytest

from healthgpt import paths
from healthgpt.settings import Settings, settings

ROOT = Path(__file__).resolve().parents[1]
# Variables that are not this project's settings: torchrun's, read where training starts.
OTHER_READERS = {"healthgpt/train/distributed.py", "pipelines/train_entry.py"}


def environment_reads(path: Path) -> list[int]:
    """Lines of `path` that touch `os.environ` or call `os.getenv`."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
            lines.append(node.lineno)
    return lines


def test_only_the_settings_module_reads_the_environment():
    readers = {
        path.relative_to(ROOT).as_posix(): lines
        for folder in ("healthgpt", "pipelines")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (lines := environment_reads(path))
    }
    assert set(readers) - OTHER_READERS == {"healthgpt/settings.py"}, readers


def test_settings_are_built_once_per_environment(monkeypatch, tmp_path):
    for name in ("HEALTHGPT_SOURCES_DIR", "HEALTHGPT_DEID_SALT_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HEALTHGPT_DATA_DIR", str(tmp_path / "a"))
    first = settings()
    assert settings() is first
    monkeypatch.setenv("HEALTHGPT_DATA_DIR", str(tmp_path / "b"))
    assert settings() is not first
    assert paths.data_dir() == tmp_path / "b"
    assert paths.sources_dir() == tmp_path / "b" / "sample_sources"
    assert paths.deid_salt_file() == tmp_path / "b" / ".secrets" / "deid_salt"


def test_defaults_and_name_keyed_families():
    built = Settings.from_variables(
        {
            "HEALTHGPT_SOURCE_VQA_RAD": " /data/vqa ",
            "HEALTHGPT_LIMIT_MAX_TEXT_CHARS": "10",
            "HEALTHGPT_REGISTRY_DIRS": "/a::/b",
            "OTHER": "ignored",
        }
    )
    assert (built.mixture_preset, built.profile, built.max_step_pods) == ("demo", "local", 8)
    assert built.train_preset == "cpu"
    assert built.source_root("HEALTHGPT_SOURCE_VQA_RAD") == Path("/data/vqa")
    assert built.source_root("HEALTHGPT_SOURCE_SLAKE") is None
    assert built.with_prefix("HEALTHGPT_LIMIT_") == {"MAX_TEXT_CHARS": "10"}
    assert built.registry_dirs == (Path("/a"), Path("/b"))
    assert "OTHER" not in built.variables


def test_a_bad_value_names_its_variable():
    with pytest.raises(ValueError, match="HEALTHGPT_MAX_STEP_PODS must be a positive integer"):
        Settings.from_variables({"HEALTHGPT_MAX_STEP_PODS": "many"})
    with pytest.raises(ValueError, match="HEALTHGPT_"):
        Settings.from_variables({}).value("PATH")
