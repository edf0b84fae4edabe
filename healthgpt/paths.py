"""Where data lives, shared by the CLI and Dagster; the values come from `healthgpt.settings`.

- `HEALTHGPT_DATA_DIR` (default `./data`): every output (shards, checkpoints, reports).
- `HEALTHGPT_SOURCES_DIR` (default `$HEALTHGPT_DATA_DIR/sample_sources`): a directory with
  one folder per dataset, named as in the dataset registry.
- `HEALTHGPT_SHARDS_URL` (default `$HEALTHGPT_DATA_DIR`): where the large datasets go, the
  ingested sources and the mixture; a local path or an object-store URL (`s3://bucket/x`,
  `gs://...`; install s3fs or gcsfs). Checkpoints, reports and exports stay local.
- `MANIFESTS_DIR`: the checkout's `data_manifests/` (one YAML per dataset: its reader,
  license, expected counts), read by the dataset registry
  (`healthgpt.data.sources.registry`), the ingestion checks and the dataset card.
- `HEALTHGPT_SOURCE_<NAME>` (e.g. `HEALTHGPT_SOURCE_MIMIC_CXR=/data/mimic-cxr-jpg/2.1.0`):
  the root of one dataset, overriding the above. This is how the real downloads are used.
- `HEALTHGPT_DEID_SALT_FILE` (default `$HEALTHGPT_DATA_DIR/.secrets/deid_salt`): this
  installation's private de-identification salt, generated when `HEALTHGPT_DEID_SALT` is
  not set (see `healthgpt.data.decode.deid.salt_for_source`).
"""

from __future__ import annotations

from pathlib import Path

from healthgpt.settings import settings

MANIFESTS_DIR = Path(__file__).resolve().parents[1] / "data_manifests"


def data_dir() -> Path:
    return settings().data_dir


def sources_dir() -> Path:
    return settings().sources_dir


def source_root_variable(name: str) -> str:
    """The variable that names the root of dataset `name`: `HEALTHGPT_SOURCE_<NAME>`."""
    return f"HEALTHGPT_SOURCE_{name.upper()}"


def source_root(name: str, *, variable: str | None = None, default: str | None = None) -> Path:
    """The configured root of dataset `name`: the variable (`HEALTHGPT_SOURCE_<NAME>`
    unless the registry names another) when set, else `default` (a path relative to the
    sources directory, `name` unless the registry names another) under the sources dir."""
    override = settings().source_root(variable or source_root_variable(name))
    return override if override else sources_dir() / (default or name)


def shards_location() -> str:
    """`HEALTHGPT_SHARDS_URL`, else the data directory."""
    return settings().shards_url


def deid_salt_file() -> Path:
    """`HEALTHGPT_DEID_SALT_FILE`, else `.secrets/deid_salt` in the data directory."""
    return settings().deid_salt_file
