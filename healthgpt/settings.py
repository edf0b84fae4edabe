"""The installation's settings: every `HEALTHGPT_*` environment variable, read in one place.

`settings()` returns one frozen `Settings`, built from a snapshot of the `HEALTHGPT_*`
variables (and the working directory, which relative paths resolve against). It is built
once per distinct snapshot and cached, so callers ask for it where they need a value
(never at import time) and a changed environment, as in a test, is seen on the next call.

Variables (default; meaning):
- `HEALTHGPT_DATA_DIR` (`./data`): every output (shards, checkpoints, reports).
- `HEALTHGPT_SOURCES_DIR` (`$HEALTHGPT_DATA_DIR/sample_sources`): one folder per dataset.
- `HEALTHGPT_SOURCE_<NAME>` (`$HEALTHGPT_SOURCES_DIR/<name>`): the root of one dataset.
- `HEALTHGPT_REGISTRY_DIRS` (none): more dataset registry folders, `os.pathsep`-separated.
- `HEALTHGPT_SHARDS_URL` (`$HEALTHGPT_DATA_DIR`): ingested datasets and the mixture.
- `HEALTHGPT_CHUNKS_<NAME>` (none: ingested whole): chunk partitions of one dataset.
- `HEALTHGPT_LIMIT_<LIMIT>` (`healthgpt.data.limits`): limits on hostile input.
- `HEALTHGPT_DEID_SALT` (none): the secret salt of every pseudonym.
- `HEALTHGPT_DEID_SALT_FILE` (`$HEALTHGPT_DATA_DIR/.secrets/deid_salt`): the private salt.
- `HEALTHGPT_MIXTURE_PRESET` (`demo`): the mixture preset of runs and evaluations.
- `HEALTHGPT_TRAIN_PRESET` (`cpu`): the training preset (`cpu`, `m3`, `l14`) of the three
  stages, the VQ tokenizer and the VQ codes, where their run config names none.
- `HEALTHGPT_OBSERVE_CRON` (`0 3 * * *`), `HEALTHGPT_OBSERVE_TIMEZONE` (`UTC`): when the
  sources are observed.
- `HEALTHGPT_AUTOMATE_TRAINING` (off): `1` makes training follow its data.
- `HEALTHGPT_<BENCHMARK>_DIR` (none): the root of an external benchmark.
- `HEALTHGPT_PROFILE`, `HEALTHGPT_IMAGE`, `HEALTHGPT_K8S_NAMESPACE`, `HEALTHGPT_DATA_PVC`,
  `HEALTHGPT_MAX_STEP_PODS`, `HEALTHGPT_ENV_SECRET`: the production profile
  (`pipelines.production`).

torchrun's `RANK`, `LOCAL_RANK`, `WORLD_SIZE` and Dagster's own variables are read by the
code that needs them; they are not this project's settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

PREFIX = "HEALTHGPT_"
DEFAULT_OBSERVE_CRON = "0 3 * * *"


def _text(variables: Mapping[str, str], name: str, default: str = "") -> str:
    """A variable's value without surrounding blanks; unset or blank gives `default`."""
    return variables.get(name, "").strip() or default


def _positive_int(variables: Mapping[str, str], name: str, default: int) -> int:
    value = _text(variables, name)
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Settings:
    """The typed settings of this installation (see the module's table)."""

    data_dir: Path
    sources_dir: Path
    shards_url: str
    registry_dirs: tuple[Path, ...]
    deid_salt: str
    deid_salt_file: Path
    mixture_preset: str
    train_preset: str
    observe_cron: str
    observe_timezone: str
    automate_training: bool
    profile: str
    image: str
    k8s_namespace: str
    data_pvc: str
    max_step_pods: int
    env_secret: str
    # Every HEALTHGPT_* variable as set, for the families keyed by a name
    # (HEALTHGPT_SOURCE_<NAME>, HEALTHGPT_CHUNKS_<NAME>, ...) and for forwarding to pods.
    variables: Mapping[str, str]

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> Settings:
        """Settings from a mapping of variables (only `HEALTHGPT_*` ones are kept)."""
        variables = MappingProxyType(
            {k: v for k, v in sorted(variables.items()) if k.startswith(PREFIX)}
        )
        data_dir = Path(_text(variables, "HEALTHGPT_DATA_DIR", "data")).absolute()
        sources = _text(variables, "HEALTHGPT_SOURCES_DIR")
        salt_file = _text(variables, "HEALTHGPT_DEID_SALT_FILE")
        registry_dirs = variables.get("HEALTHGPT_REGISTRY_DIRS", "").split(os.pathsep)
        return cls(
            data_dir=data_dir,
            sources_dir=Path(sources).absolute() if sources else data_dir / "sample_sources",
            shards_url=_text(variables, "HEALTHGPT_SHARDS_URL", str(data_dir)),
            registry_dirs=tuple(Path(d.strip()).absolute() for d in registry_dirs if d.strip()),
            # Not stripped: the salt is a secret and is used exactly as given.
            deid_salt=variables.get("HEALTHGPT_DEID_SALT", ""),
            deid_salt_file=(
                Path(salt_file).absolute() if salt_file else data_dir / ".secrets" / "deid_salt"
            ),
            mixture_preset=_text(variables, "HEALTHGPT_MIXTURE_PRESET", "demo"),
            train_preset=_text(variables, "HEALTHGPT_TRAIN_PRESET", "cpu"),
            observe_cron=_text(variables, "HEALTHGPT_OBSERVE_CRON", DEFAULT_OBSERVE_CRON),
            observe_timezone=_text(variables, "HEALTHGPT_OBSERVE_TIMEZONE", "UTC"),
            automate_training=_text(variables, "HEALTHGPT_AUTOMATE_TRAINING").lower()
            in {"1", "true", "yes"},
            profile=_text(variables, "HEALTHGPT_PROFILE", "local").lower(),
            image=_text(variables, "HEALTHGPT_IMAGE"),
            k8s_namespace=_text(variables, "HEALTHGPT_K8S_NAMESPACE"),
            data_pvc=_text(variables, "HEALTHGPT_DATA_PVC", "healthgpt-data"),
            max_step_pods=_positive_int(variables, "HEALTHGPT_MAX_STEP_PODS", 8),
            env_secret=_text(variables, "HEALTHGPT_ENV_SECRET", "healthgpt-env"),
            variables=variables,
        )

    def value(self, name: str) -> str:
        """The stripped value of variable `name` ("" when unset): for the families keyed by
        a dataset or benchmark name."""
        if not name.startswith(PREFIX):
            raise ValueError(f"{name}: settings are {PREFIX}* variables")
        return _text(self.variables, name)

    def source_root(self, variable: str) -> Path | None:
        """The root a `HEALTHGPT_SOURCE_<NAME>`-style variable names, or None when unset."""
        value = self.value(variable)
        return Path(value).absolute() if value else None

    def with_prefix(self, prefix: str) -> dict[str, str]:
        """The variables starting with `prefix`, by the rest of their name (`HEALTHGPT_LIMIT_`
        gives `{"MAX_TEXT_CHARS": "1000"}`); blank ones are left out."""
        return {
            name[len(prefix) :]: value.strip()
            for name, value in self.variables.items()
            if name.startswith(prefix) and value.strip()
        }


def settings() -> Settings:
    """The current settings: built once per distinct environment and working directory."""
    snapshot = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(PREFIX)))
    return _settings_for(snapshot, os.getcwd())


@lru_cache(maxsize=16)
def _settings_for(snapshot: tuple[tuple[str, str], ...], cwd: str) -> Settings:
    del cwd  # part of the cache key: relative paths resolve against it
    return Settings.from_variables(dict(snapshot))
