"""SLAKE 1.0 (Liu et al. 2021): bilingual (English / Chinese) radiology VQA, 642 images.

Official layout (https://www.med-vqa.com/slake/):

    imgs/xmlab<N>/source.jpg      (plus mask.png and detection.json, not used here)
    train.json  validation.json (or validate.json)  test.json
        lists of rows: img_id, img_name ("xmlab0/source.jpg"), question, answer, q_lang
        ("en" / "zh"), modality, location, answer_type, content_type, base_type, qid

Language: `options.language` selects "en" (the paper's setup, ~7k of the 14k rows), "zh" or
"all". Rows of an unselected language are not input items: the reader counts them in
`self.skipped` (reported by the ingest summary as `skipped_by_config`), so the totals still
add up, and they are never quarantined because nothing is wrong with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthgpt.data.decode.imaging import image_file_to_png
from healthgpt.data.json_rows import JsonRowError, iter_json_rows
from healthgpt.data.schema import new_record
from healthgpt.data.sources.base import (
    BadInput,
    Outcome,
    ReaderOptions,
    SourceReader,
    meta_json,
)
from healthgpt.data.sources.png_cache import PngCache
from healthgpt.data.vocab import answer_text, normalize_answer_type, normalize_modality
from healthgpt.data.vocab import normalize_body_part as body_region

# split -> accepted file names, in order of preference
SPLIT_FILES = {
    "train": ("train.json",),
    "validation": ("validation.json", "validate.json"),
    "test": ("test.json",),
}
LANGUAGES = ("en", "zh", "all")


class SlakeReader(SourceReader):
    name = "slake"
    expected_layout = """\
<root>/                       (the unpacked Slake1.0 folder)
  imgs/xmlab<N>/source.jpg
  train.json  validation.json (or validate.json)  test.json
      lists of rows with img_name, question, answer, q_lang, modality, location, ..."""

    def __init__(self, root: str | Path, options: ReaderOptions | None = None) -> None:
        super().__init__(root, options)
        if self.options.language not in LANGUAGES:
            raise ValueError(f"language must be one of {LANGUAGES}, got {self.options.language!r}")

    def split_files(self) -> list[tuple[str, Path]]:
        found = []
        for split, names in SPLIT_FILES.items():
            for name in names:
                if (self.root / name).is_file():
                    found.append((split, self.root / name))
                    break
        return found

    def layout_problem(self) -> str | None:
        if not (self.root / "imgs").is_dir():
            return "missing 'imgs/'"
        if not self.split_files():
            return "no train.json, validation.json or test.json"
        return None

    def items(self) -> Iterator[Outcome]:
        cache = PngCache(self._encode)
        for split, path in self.split_files():
            for index, row in enumerate(
                iter_json_rows(self.listing(path), limits=self.options.limits)
            ):
                item = f"{path.name} row {index}"
                if isinstance(row, JsonRowError):
                    yield Outcome.reject(item + "+", f"unparseable JSON: {row}", path.name)
                    continue
                if not isinstance(row, dict):
                    yield Outcome.reject(item, "QA row is not a JSON object", path.name)
                    continue
                language = str(row.get("q_lang") or "unknown").strip().lower()
                if self.options.language not in ("all", language):
                    self.skipped[f"q_lang {language} (language={self.options.language})"] += 1
                    continue
                img_name = str(row.get("img_name") or "").strip()
                yield self.guard(
                    f"{split} qid {row.get('qid', index)}",
                    f"imgs/{img_name}" if img_name else None,
                    lambda row=row, split=split, index=index: self._records(
                        row, split, index, cache
                    ),
                )

    def _encode(self, path: Path) -> bytes:
        return image_file_to_png(
            path, self.options.image_size, self.options.png_compress_level, self.options.limits
        )

    def _records(
        self, row: dict[str, Any], split: str, index: int, cache: PngCache
    ) -> list[dict[str, Any]]:
        img_name = str(row.get("img_name") or "").strip()
        question = str(row.get("question") or "").strip()
        answer = answer_text(row.get("answer"))
        if not img_name:
            raise BadInput("QA row has no img_name")
        if not question or not answer:
            raise BadInput("QA row has an empty question or answer")
        png = cache.get(self.safe_path(img_name, self.root / "imgs"))
        qid = row.get("qid", index)
        return [
            new_record(
                source=self.name,
                orig_id=f"{split}:{qid}",
                split=split,
                kind="vqa",
                modality=normalize_modality(row.get("modality")),
                image=png,
                body_part=body_region(row.get("location")),
                question=question,
                answer=answer,
                answer_type=normalize_answer_type(row.get("answer_type"), answer),
                orig_path=f"imgs/{img_name}",
                meta=meta_json(
                    qid=qid,
                    img_id=row.get("img_id"),
                    q_lang=row.get("q_lang"),
                    location=row.get("location"),
                    content_type=row.get("content_type"),
                    base_type=row.get("base_type"),
                ),
            )
        ]
