"""The dataset registry: every dataset instance is one YAML file, read here and checked.

A dataset is data, not code: `data_manifests/<name>.yaml` (and the same in the folders
`HEALTHGPT_REGISTRY_DIRS` names, `os.pathsep`-separated) says which reader reads it, where
its root is, with which reader options, and the facts about it (license, expected counts).
The Dagster graph builds `source/<name>` and `ingested/<name>` for each entry, so a second
corpus in an existing format (another LLaVA-style JSON set) needs one file and no code:

    name: My hospital's VQA set          # a display name
    source: my_vqa                       # the dataset's name: asset keys, file stem
    reader: llava_json                   # a key of healthgpt.data.sources.SOURCES
    root: {env: HEALTHGPT_SOURCE_MY_VQA, default: my_vqa}   # optional, these are defaults
    options: {image_size: 256, extra: {image_root: images}}  # optional ReaderOptions
    expected_counts: {full: {records_min: 1}}                # optional, for the checks

`root.default` is relative to the sources directory (`HEALTHGPT_SOURCES_DIR`); `root.env`
must be a `HEALTHGPT_SOURCE_*` variable. `options.extra` may name only the keys the reader
declares (`SourceReader.extra_keys`, values checked by `check_options`), its `limits` may
only lower the defaults, and no salt may be set in a file. Errors name
the file and the key, and every file is checked when the registry loads, so a typo fails
the code location's load rather than one run later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import yaml

from healthgpt.data.limits import Limits
from healthgpt.data.options import ReaderOptions
from healthgpt.data.sources import SOURCES, SourceReader, reader_class
from healthgpt.paths import MANIFESTS_DIR, source_root, source_root_variable
from healthgpt.settings import settings

REGISTRY_DIRS_ENV = "HEALTHGPT_REGISTRY_DIRS"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")  # use with fullmatch: `$` passes "x\n"
# The only variables a registry file may name for its root: a file must not be able to make
# an error message print another setting (HEALTHGPT_DEID_SALT) as a path.
ROOT_ENV_PATTERN = re.compile(r"HEALTHGPT_SOURCE_[A-Z0-9_]+")
# Options a registry file may not set: the chunk is chosen per run, and a salt is a secret
# that belongs in the environment (HEALTHGPT_DEID_SALT), not in a file under version control.
RUN_ONLY_OPTIONS = frozenset({"chunk", "deid_salt"})
REGISTRY_KEYS = ("source", "reader", "root", "options")


class RegistryError(ValueError):
    """A registry file that cannot be used, with the file and the reason."""


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset: its name, its reader, where its root is, its options."""

    name: str
    reader: str
    manifest_file: Path
    root_variable: str  # the variable that overrides the root
    root_default: str  # the root relative to the sources directory
    options: ReaderOptions
    facts: Mapping[str, Any]  # the rest of the file: license, expected_counts, paper, ...

    @classmethod
    def for_reader(cls, reader: str) -> DatasetEntry:
        """An unregistered dataset named after reader `reader`, with the default options
        (a bare reader name on the command line, a reader under test)."""
        if reader not in SOURCES:
            raise RegistryError(
                f"{reader!r} is neither a registered dataset nor a reader; readers: "
                + ", ".join(sorted(SOURCES))
            )
        return cls(
            name=reader,
            reader=reader,
            manifest_file=MANIFESTS_DIR / f"{reader}.yaml",
            root_variable=source_root_variable(reader),
            root_default=reader,
            options=ReaderOptions(),
            facts=MappingProxyType({}),
        )

    def root(self) -> Path:
        """The dataset's root, as `healthgpt.paths.source_root` resolves it."""
        return source_root(self.name, variable=self.root_variable, default=self.root_default)

    def open(
        self, root: str | Path | None = None, options: ReaderOptions | None = None
    ) -> SourceReader:
        """A reader of this dataset (at `root`, default `self.root()`) with `options`
        (default the registry's); its records, ids and quarantine rows carry this name."""
        return open_reader(
            self.reader,
            self.root() if root is None else root,
            self.options if options is None else options,
            dataset=self.name,
        )


def open_reader(
    reader: str,
    root: str | Path,
    options: ReaderOptions | None = None,
    dataset: str | None = None,
) -> SourceReader:
    """An instance of reader `reader` for dataset `dataset` (default: the reader's own name).

    The reader stamps `self.name` on every record (`source`), id and quarantine row, so the
    instance takes the dataset's name: two corpora read by one reader stay apart."""
    instance = reader_class(reader)(root, options)
    if dataset is not None and dataset != instance.name:
        instance.name = dataset  # type: ignore[misc]  # the instance's, not the class's
    return instance


def registry_dirs() -> tuple[Path, ...]:
    """The checkout's `data_manifests/`, then the folders `HEALTHGPT_REGISTRY_DIRS` names."""
    return (MANIFESTS_DIR, *settings().registry_dirs)


def load_registry(dirs: Iterable[str | Path] | None = None) -> dict[str, DatasetEntry]:
    """Every dataset in `dirs` (default `registry_dirs()`), by name, sorted; one bad file
    is a `RegistryError` naming it."""
    entries: dict[str, DatasetEntry] = {}
    for directory in registry_dirs() if dirs is None else map(Path, dirs):
        if not directory.is_dir():
            raise RegistryError(
                f"registry folder {directory} does not exist (named by {REGISTRY_DIRS_ENV} "
                "or passed in)"
            )
        for path in sorted(directory.glob("*.yaml")):
            entry = load_entry(path)
            if entry.name in entries:
                raise RegistryError(
                    f"{path}: dataset {entry.name!r} is already registered by "
                    f"{entries[entry.name].manifest_file}"
                )
            entries[entry.name] = entry
    return dict(sorted(entries.items()))


def dataset(name: str, registry: Mapping[str, DatasetEntry] | None = None) -> DatasetEntry:
    """The registered dataset `name`."""
    registry = load_registry() if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise RegistryError(
            f"unknown dataset {name!r}; registered: {', '.join(sorted(registry))}"
        ) from None


def resolve(
    dataset: DatasetEntry | str, registry: Mapping[str, DatasetEntry] | None = None
) -> DatasetEntry:
    """`dataset` itself, or the dataset of that name: the registered one (in `registry`,
    default the loaded registry), else `DatasetEntry.for_reader`."""
    if isinstance(dataset, DatasetEntry):
        return dataset
    registry = load_registry() if registry is None else registry
    return registry[dataset] if dataset in registry else DatasetEntry.for_reader(dataset)


def load_entry(path: str | Path) -> DatasetEntry:
    """One registry file, checked."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RegistryError(f"{path}: cannot read it as YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise RegistryError(f"{path}: expected a mapping of keys, got {type(spec).__name__}")
    name = spec.get("source")
    if not isinstance(name, str) or not name:
        raise RegistryError(f"{path}: missing `source:` (the dataset's name)")
    if not NAME_PATTERN.fullmatch(name):
        raise RegistryError(
            f"{path}: source {name!r} must be lower case letters, digits and _ "
            "(it names asset keys and variables)"
        )
    if path.stem != name:
        raise RegistryError(f"{path}: the file must be named {name}.yaml after its source")
    reader = spec.get("reader")
    if reader not in SOURCES:
        what = "missing `reader:`" if reader is None else f"unknown reader {reader!r}"
        raise RegistryError(f"{path}: {what}; readers: {', '.join(sorted(SOURCES))}")
    variable, default = _root_spec(path, name, spec.get("root"))
    options = reader_options(path, spec.get("options"))
    try:
        reader_class(reader).check_options(options)
    except ValueError as exc:
        raise RegistryError(f"{path}: options: {exc}") from None
    _check_expected_counts(path, spec.get("expected_counts"))
    return DatasetEntry(
        name=name,
        reader=reader,
        manifest_file=path,
        root_variable=variable,
        root_default=default,
        options=options,
        facts=MappingProxyType({k: v for k, v in spec.items() if k not in REGISTRY_KEYS}),
    )


COUNT_PROFILES = ("full", "sample")
COUNT_KEYS = ("items", "quarantined", "records_min", "records_max")


def _check_expected_counts(path: Path, counts: Any) -> None:
    """`expected_counts: {full|sample: {items, quarantined, records_min, records_max}}`,
    each a non-negative integer (comments in the file may say more)."""
    if counts is None:
        return
    if not isinstance(counts, dict) or set(counts) - set(COUNT_PROFILES):
        raise RegistryError(f"{path}: expected_counts must map {COUNT_PROFILES} to counts")
    for profile, values in counts.items():
        values = {} if values is None else values
        if not isinstance(values, dict) or set(values) - set(COUNT_KEYS):
            raise RegistryError(
                f"{path}: expected_counts.{profile} may name only {', '.join(COUNT_KEYS)}"
            )
        for key, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise RegistryError(
                    f"{path}: expected_counts.{profile}.{key} must be a non-negative "
                    f"integer, got {value!r}"
                )
        low, high = values.get("records_min", 0), values.get("records_max")
        if high is not None and high < low:
            raise RegistryError(f"{path}: expected_counts.{profile}: records_max < records_min")


def _root_spec(path: Path, name: str, root: Any) -> tuple[str, str]:
    """`root: {env, default}`, with the defaults `HEALTHGPT_SOURCE_<NAME>` and `<name>`."""
    root = {} if root is None else root
    if not isinstance(root, dict) or set(root) - {"env", "default"}:
        raise RegistryError(f"{path}: root must be a mapping with `env` and/or `default`")
    variable = root.get("env", source_root_variable(name))
    if not isinstance(variable, str) or not ROOT_ENV_PATTERN.fullmatch(variable):
        raise RegistryError(
            f"{path}: root.env must be a HEALTHGPT_SOURCE_* variable, got {variable!r}"
        )
    default = root.get("default", name)
    relative = PurePosixPath(default) if isinstance(default, str) else None
    if relative is None or relative.is_absolute() or ".." in relative.parts or not default:
        raise RegistryError(
            f"{path}: root.default must be a path inside the sources directory, got {default!r}"
        )
    return variable, default


def reader_options(path: Path, options: Any) -> ReaderOptions:
    """`options:` as `ReaderOptions`: known field names, values of the defaults' types."""
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise RegistryError(f"{path}: options must be a mapping of ReaderOptions fields")
    known = {spec.name: spec for spec in fields(ReaderOptions)}
    defaults = ReaderOptions()
    values: dict[str, Any] = {}
    for key, value in options.items():
        if key not in known or key in RUN_ONLY_OPTIONS:
            allowed = sorted(set(known) - RUN_ONLY_OPTIONS)
            raise RegistryError(f"{path}: unknown option {key!r}; options: {', '.join(allowed)}")
        values[key] = _option_value(path, key, value, getattr(defaults, key))
    extra = values.get("extra", {})
    if "deid_salt" in extra:
        raise RegistryError(
            f"{path}: options.extra.deid_salt: a salt is a secret, set HEALTHGPT_DEID_SALT"
        )
    try:
        result = ReaderOptions(**values)
        result.limits  # noqa: B018 - checks extra["limits"] now, naming this file
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{path}: options: {exc}") from None
    _only_lower_limits(path, extra.get("limits") or {})
    return result


def _only_lower_limits(path: Path, limits: Mapping[str, Any]) -> None:
    """A registry file may tighten the hostile-input limits, never loosen them: raising one
    is a decision for whoever runs ingest (`HEALTHGPT_LIMIT_*`, or a run's config)."""
    defaults = Limits()
    for name, value in limits.items():
        if int(value) > getattr(defaults, name):
            raise RegistryError(
                f"{path}: options.extra.limits.{name}={value} is above the default "
                f"{getattr(defaults, name)}; a registry file may only lower limits"
            )


def _option_value(path: Path, key: str, value: Any, default: Any) -> Any:
    """`value` checked against the type of the option's default (a list for a tuple)."""
    if isinstance(default, tuple):
        ok = isinstance(value, list) and len(value) == len(default)
        ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        value = tuple(float(v) for v in value) if ok else value
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise RegistryError(f"{path}: option {key} must be like {default!r}, got {value!r}")
    return value
