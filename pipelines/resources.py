"""Resources: where the data lives. Defaults come from the environment (healthgpt.paths)."""

from pathlib import Path

import dagster as dg

from healthgpt import paths
from healthgpt.data.ingest import chunk_dir


class DataLocations(dg.ConfigurableResource):
    """Roots of the sources and of every output; empty strings mean "use the environment"."""

    data_dir: str = ""
    sources_dir: str = ""

    def output_dir(self) -> Path:
        return Path(self.data_dir).absolute() if self.data_dir else paths.data_dir()

    def source_root(self, name: str) -> Path:
        if self.sources_dir:
            return Path(self.sources_dir).absolute() / name
        return paths.source_root(name)

    def ingested_dir(self, name: str, chunk: tuple[int, int] | None = None) -> Path:
        """Where source `name` is ingested; `chunk` = (index, n_chunks) for one chunk of it."""
        whole = self.output_dir() / "ingested" / name
        return chunk_dir(whole, chunk) if chunk else whole
