"""LLaVA-style conversation JSON: LLaVA-Med, PubMedVision, VL-Health and the user's own data.

Layout: one or more `*.json` (a list of samples) or `*.jsonl` (one sample a line) files at the
source root, and the images they name. A sample is

    {"id": ..., "image": "path.jpg" | ["a.jpg", "b.jpg"],
     "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}],
     "modality": "Computed Tomography" (optional, PubMedVision), "body_part": (optional),
     "split": "train" | "validation" | "test" (optional, default train)}

Image paths resolve against `options.extra["image_root"]` (relative to the source root) if
set, else against the root, then `<root>/images/`. A path that leaves the source root
(`../../etc/passwd`, `/etc/passwd`) or names no file is quarantined.

One record per sample, kind "conversation", turns kept verbatim. Multi-image samples keep
their first image; `meta.n_images` records how many the sample named, so the mixture can drop
them (and count them) where a task takes one image.

Duplicate `id`s in one file give duplicate record ids; the shard checks catch those (tracking
ids here would make memory grow with the 1.3M-sample files).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthgpt.data.decode.imaging import image_file_to_png
from healthgpt.data.json_rows import JsonRowError, iter_json_rows
from healthgpt.data.schema import new_record
from healthgpt.data.sources.base import BadInput, Outcome, SourceReader, meta_json
from healthgpt.data.vocab import modality_from_text, normalize_body_part, normalize_split


class LlavaJsonReader(SourceReader):
    name = "llava_json"
    expected_layout = """\
<root>/
  *.json   (a list of {id, image, conversations: [{from, value}, ...]})  and/or
  *.jsonl  (one such sample a line)
  images named by the samples, relative to options.extra["image_root"], the root, or
  <root>/images/"""

    def json_files(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.suffix in (".json", ".jsonl"))

    def image_roots(self) -> list[Path]:
        configured = self.options.extra.get("image_root")
        if configured:
            return [self.safe_path(str(configured))]
        return [self.root, self.root / "images"]

    def layout_problem(self) -> str | None:
        if not self.json_files():
            return "no *.json or *.jsonl files at the root"
        configured = self.options.extra.get("image_root")
        if configured:
            try:
                folder = self.safe_path(str(configured))
            except BadInput:
                folder = None
            if folder is None or not folder.is_dir():
                return f"image_root {configured!r} is not a folder under the source root"
        return None

    def items(self) -> Iterator[Outcome]:
        roots = self.image_roots()
        for path in self.json_files():
            for index, sample in enumerate(
                iter_json_rows(self.listing(path), limits=self.options.limits)
            ):
                item = f"{path.name}#{index}"
                if isinstance(sample, JsonRowError):
                    yield Outcome.reject(item, f"unparseable JSON: {sample}", path.name)
                    continue
                yield self.guard(
                    item,
                    _rel_path(sample) or path.name,
                    lambda s=sample, f=path.name, i=index: self._records(s, f, i, roots),
                    key=self._image_key(sample, roots) if self.options.chunk else None,
                )

    def _image_key(self, sample: Any, roots: list[Path]) -> str | None:
        """The chunk key of the sample's image as it lies on disk (found by a stat, not read):
        the JSON names it relative to an image root, the fingerprint by its path in the source."""
        images = sample.get("image") if isinstance(sample, dict) else None
        first = images[0] if isinstance(images, list) and images else images
        if not isinstance(first, str) or not first.strip():
            return None
        try:
            found = self._resolve(first.strip(), roots)
        except BadInput:
            return None
        return self.chunk_key(found.relative_to(self.root.resolve()).as_posix())

    def _records(
        self, sample: Any, file_name: str, index: int, roots: list[Path]
    ) -> list[dict[str, Any]]:
        if not isinstance(sample, dict):
            raise BadInput("sample is not a JSON object")
        conversations = _conversations(sample.get("conversations"))
        images = sample.get("image")
        images = images if isinstance(images, list) else [images] if images else []
        if not images or not all(isinstance(i, str) and i.strip() for i in images):
            raise BadInput("sample names no image")
        path = self._resolve(images[0].strip(), roots)
        sample_id = sample.get("id")
        orig_id = (
            f"{file_name}:{sample_id}" if sample_id not in (None, "") else f"{file_name}#{index}"
        )
        try:
            split = normalize_split(sample.get("split"))
        except ValueError as exc:
            raise BadInput(str(exc)) from exc
        return [
            new_record(
                source=self.name,
                orig_id=orig_id,
                split=split,
                kind="conversation",
                modality=modality_from_text(sample.get("modality")) or "Other",
                image=image_file_to_png(
                    path,
                    self.options.image_size,
                    self.options.png_compress_level,
                    self.options.limits,
                ),
                body_part=normalize_body_part(sample.get("body_part")),
                conversations=conversations,
                orig_path=path.relative_to(self.root.resolve()).as_posix(),
                meta=meta_json(
                    sample_id=sample_id,
                    file=file_name,
                    n_images=len(images),
                    modality_label=sample.get("modality"),
                ),
            )
        ]

    def _resolve(self, relative: str, roots: list[Path]) -> Path:
        """The first existing file the path names under the image roots, refusing escapes."""
        candidates = [self.safe_path(relative, root) for root in roots]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise BadInput(f"image file missing: {relative}")


def _conversations(turns: Any) -> list[dict[str, str]]:
    """Turns verbatim, checked for shape: a non-empty list of {from: str, value: str}."""
    if not isinstance(turns, list) or not turns:
        raise BadInput("sample has no conversations")
    out = []
    for turn in turns:
        if not (
            isinstance(turn, dict)
            and isinstance(turn.get("from"), str)
            and isinstance(turn.get("value"), str)
        ):
            raise BadInput("conversation turn is not {from: str, value: str}")
        out.append({"from": turn["from"], "value": turn["value"]})
    return out


def _rel_path(sample: Any) -> str | None:
    """The first image path a sample names, for the quarantine table."""
    if not isinstance(sample, dict):
        return None
    image = sample.get("image")
    image = image[0] if isinstance(image, list) and image else image
    return image if isinstance(image, str) else None
