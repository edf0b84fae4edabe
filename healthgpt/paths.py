"""Where data lives: one place that reads the environment, shared by the CLI and Dagster.

- `HEALTHGPT_DATA_DIR` (default `./data`): every output (shards, checkpoints, reports).
- `HEALTHGPT_SOURCES_DIR` (default `$HEALTHGPT_DATA_DIR/sample_sources`): a directory with
  one folder per source, named as in the source registry.
- `HEALTHGPT_SHARDS_URL` (default `$HEALTHGPT_DATA_DIR`): where the large datasets go, the
  ingested sources and the mixture; a local path or an object-store URL (`s3://bucket/x`,
  `gs://...`; install s3fs or gcsfs). Checkpoints, reports and exports stay local.
- `MANIFESTS_DIR`: the checkout's `data_manifests/` (one YAML per source: license, expected
  counts), read by the ingestion checks and the dataset card.
- `HEALTHGPT_SOURCE_<NAME>` (e.g. `HEALTHGPT_SOURCE_MIMIC_CXR=/data/mimic-cxr-jpg/2.1.0`):
  the root of one source, overriding the above. This is how the real downloads are used.
- `HEALTHGPT_DEID_SALT_FILE` (default `$HEALTHGPT_DATA_DIR/.secrets/deid_salt`): this
  installation's private de-identification salt, generated when `HEALTHGPT_DEID_SALT` is
  not set (see `healthgpt.data.decode.deid.salt_for_source`).
"""

from __future__ import annotations

import os
from pathlib import Path

MANIFESTS_DIR = Path(__file__).resolve().parents[1] / "data_manifests"


def data_dir() -> Path:
    return Path(os.environ.get("HEALTHGPT_DATA_DIR", "data")).absolute()


def sources_dir() -> Path:
    default = data_dir() / "sample_sources"
    return Path(os.environ.get("HEALTHGPT_SOURCES_DIR", default)).absolute()


def source_root(name: str) -> Path:
    """The configured root of source `name`."""
    override = os.environ.get(f"HEALTHGPT_SOURCE_{name.upper()}")
    return Path(override).absolute() if override else sources_dir() / name


def shards_location() -> str:
    """`HEALTHGPT_SHARDS_URL`, else the data directory."""
    return os.environ.get("HEALTHGPT_SHARDS_URL", "").strip() or str(data_dir())


def deid_salt_file() -> Path:
    """`HEALTHGPT_DEID_SALT_FILE`, else `.secrets/deid_salt` in the data directory."""
    override = os.environ.get("HEALTHGPT_DEID_SALT_FILE", "").strip()
    return Path(override).absolute() if override else data_dir() / ".secrets" / "deid_salt"
