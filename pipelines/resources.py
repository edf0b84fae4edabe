"""Resources: where the data lives. Defaults come from the settings (healthgpt.paths)."""

from pathlib import Path

import dagster as dg

from healthgpt import paths
from healthgpt.data.ingest.run import chunk_dir
from healthgpt.data.sources.registry import DatasetEntry, resolve
from healthgpt.storage import output_path


class DataLocations(dg.ConfigurableResource):
    """Roots of the sources and of every output; empty strings mean "use the environment".

    `shards_url` is where the large datasets (ingested sources, the mixture) go: a local path
    or an object-store URL such as `s3://bucket/healthgpt`. Empty, it is
    `HEALTHGPT_SHARDS_URL` when `data_dir` is not set either, else the data directory.
    """

    data_dir: str = ""
    sources_dir: str = ""
    shards_url: str = ""

    def output_dir(self) -> Path:
        return Path(self.data_dir).absolute() if self.data_dir else paths.data_dir()

    def shards_root(self) -> Path:
        if self.shards_url:
            return output_path(self.shards_url)
        return output_path(self.data_dir or paths.shards_location())

    def source_root(self, dataset: DatasetEntry | str) -> Path:
        """The root of a dataset (an entry or a name, see `registry.resolve`): under
        `sources_dir` when it is set, else where the registry and settings put it."""
        entry = resolve(dataset)
        if self.sources_dir:
            return Path(self.sources_dir).absolute() / entry.root_default
        return entry.root()

    def ingested_dir(self, name: str, chunk: tuple[int, int] | None = None) -> Path:
        """Where source `name` is ingested; `chunk` = (index, n_chunks) for one chunk of it."""
        whole = self.shards_root() / "ingested" / name
        return chunk_dir(whole, chunk) if chunk else whole

    def mixture_dir(self) -> Path:
        return self.shards_root() / "mixture"
