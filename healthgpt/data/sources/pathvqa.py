"""PathVQA (He et al. 2020): 32,799 QA pairs about 4,998 pathology images.

Two distributions are accepted; the reader detects which one the root holds:

1. the authors' release (https://github.com/UCSD-AI4H/PathVQA):

       pvqa/images/{train,val,test}/<name>.jpg
       pvqa/qas/{train,val,test}/{split}_qa.pkl   pickled list of {image, question, answer}

2. the Hugging Face Parquet copy (flaviagiammarino/path-vqa):

       data/{train,validation,test}-NNNNN-of-NNNNN.parquet   columns image {bytes, path},
                                                             question, answer

Security: unpickling runs code named in the file. The `.pkl` files are loaded with
`load_restricted_pickle`, which resolves only the builtins list, dict, str, int and float and
refuses anything else, before any of it is called.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import pickle
import re
from collections import Counter
from collections.abc import Iterator
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from healthgpt.data.decode.imaging import encode_png, image_file_to_png, load_image_bytes
from healthgpt.data.schema import new_record
from healthgpt.data.shards import open_shard
from healthgpt.data.sources.base import BadInput, Outcome, SourceReader, meta_json
from healthgpt.data.sources.png_cache import PngCache
from healthgpt.data.vocab import answer_text, normalize_answer_type, normalize_split

PKL_SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = ("", ".jpg", ".jpeg", ".png")
# Rows are read in batches: the batch's images are encoded one after another, then its
# records built. Building each record right after its image ran that bookkeeping with the
# caches the codecs had just filled, at several times its cost.
BATCH_ROWS = 16


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names something other than the plain builtin containers and scalars."""


class _RestrictedUnpickler(pickle.Unpickler):
    ALLOWED = frozenset({"list", "dict", "str", "int", "float"})

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in self.ALLOWED:
            return getattr(builtins, name)
        raise UnsafePickleError(
            f"refused to load {module}.{name} from a pickle: only builtins "
            f"{', '.join(sorted(self.ALLOWED))} are allowed"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a pickle with persistent ids")


# A name `Confinement` joins to its folder as it is: no separator, no NUL.
_PLAIN_NAME = re.compile(rf"[^/\x00{re.escape(os.sep)}]+")


def _regular_files(folder: Path) -> dict[str, bool]:
    """Each name in `folder`, True for a regular file that is not a link; empty when the
    folder cannot be listed."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name: entry.is_file(follow_symlinks=False) for entry in entries}
    except OSError:
        return {}


def load_restricted_pickle(path: Path) -> Any:
    """Unpickle a file that may only contain lists, dicts, strings and numbers."""
    with open(path, "rb") as handle:
        return _RestrictedUnpickler(handle, encoding="utf-8").load()


class PathVqaReader(SourceReader):
    name = "pathvqa"
    expected_layout = """\
either the authors' release:
  <root>/pvqa/images/{train,val,test}/<image>.jpg
  <root>/pvqa/qas/{train,val,test}/<split>_qa.pkl   (list of {image, question, answer})
or the Hugging Face Parquet copy:
  <root>/data/{train,validation,test}-*.parquet     (columns image {bytes, path}, question,
                                                     answer)"""

    @cached_property
    def pvqa(self) -> Path:
        """The release folder: `<root>/pvqa`, or the root itself when it is that folder."""
        return self.root / "pvqa" if (self.root / "pvqa").is_dir() else self.root

    def pkl_files(self) -> list[tuple[str, Path]]:
        found = []
        for split in PKL_SPLITS:
            path = self.pvqa / "qas" / split / f"{split}_qa.pkl"
            if path.is_file():
                found.append((split, path))
        return found

    def parquet_files(self) -> list[tuple[str, Path]]:
        order = {"train": 0, "validation": 1, "test": 2}
        found = []
        for path in sorted((self.root / "data").glob("*.parquet")):
            try:
                found.append((normalize_split(path.name.split("-")[0]), path))
            except ValueError:
                continue
        return sorted(found, key=lambda sp: (order[sp[0]], sp[1].name))

    @cached_property
    def layout(self) -> str | None:
        """Which layout the root holds: pkl or parquet (the authors' release wins if both)."""
        if self.pkl_files():
            return "pkl"
        if self.parquet_files():
            return "parquet"
        return None

    def layout_problem(self) -> str | None:
        if self.layout is None:
            return "found neither pvqa/qas/<split>/<split>_qa.pkl nor data/<split>-*.parquet"
        if self.layout == "pkl" and not (self.pvqa / "images").is_dir():
            return "missing pvqa/images/"
        return None

    def items(self) -> Iterator[Outcome]:
        if self.layout == "pkl":
            yield from self._pkl_items()
        else:
            yield from self._parquet_items()

    def chunk_key(self, rel_path: str) -> str | None:
        """An image file keys to its name without suffix, as the pickled rows name it."""
        if "images/" not in rel_path:
            return None
        for suffix in IMAGE_SUFFIXES:
            if suffix and rel_path.endswith(suffix):
                return rel_path.removesuffix(suffix)
        return rel_path

    # ------------------------------------------------------------------ authors' release

    def _pkl_items(self) -> Iterator[Outcome]:
        for split, path in self.pkl_files():
            rel = self.rel(path)
            try:
                rows = load_restricted_pickle(self.listing(path))
            except UnsafePickleError as exc:
                yield Outcome.reject(rel, f"unsafe pickle: {exc}", rel)
                continue
            except Exception as exc:  # noqa: BLE001 - a corrupt pickle fails any which way
                yield Outcome.reject(rel, f"unreadable pickle: {type(exc).__name__}: {exc}", rel)
                continue
            if not isinstance(rows, list):
                yield Outcome.reject(rel, "pickle does not hold a list of QA rows", rel)
                continue
            folder = Path(self.rel(self.pvqa / "images" / split))
            listed = []
            for index, row in enumerate(rows):
                image = _image_name(row)
                place = (folder / image).as_posix() if image else rel
                listed.append((f"{split} row {index}", place, index, row))
            paths, uses = self._image_uses(split, listed)
            cache = PngCache(self._encode_file, uses=uses)
            for start in range(0, len(listed), BATCH_ROWS):
                batch = listed[start : start + BATCH_ROWS]
                found = self._encode_ahead(batch, cache, paths)
                for item, place, index, row in batch:
                    build = partial(self._pkl_records, row, split, index, cache, found)
                    yield self.guard(item, place, build)

    def _image_uses(
        self, split: str, rows: list[tuple[str, str, int, Any]]
    ) -> tuple[dict[str, Path | None], Counter[Path]]:
        """The image file each name of this run's rows resolves to (None: it does not; each
        name resolved once), and how many rows name each file: the cache holds an image
        until the last of them is built, and no longer. Counted by file, as the cache keys
        it: several spellings of one file (`x`, `x.jpg`, `./x`) are one image."""
        paths: dict[str, Path | None] = {}
        uses: Counter[Path] = Counter()
        for item, place, _, row in rows:
            image = _image_name(row)
            if not image or not self.reads(item, place):
                continue
            if image not in paths:
                try:
                    paths[image] = self._image_path(split, image)
                except Exception:  # noqa: BLE001 - the row's own build meets it and quarantines it
                    paths[image] = None
            if paths[image] is not None:
                uses[paths[image]] += 1
        return paths, uses

    def _encode_ahead(
        self,
        batch: list[tuple[str, str, int, Any]],
        cache: PngCache,
        paths: dict[str, Path | None],
    ) -> dict[str, Path]:
        """Encode the images of a batch of rows of this run's chunk into `cache`, one after
        another, before their records are built; returns the image files found, by name. A
        failure is left to the row's own build, which meets it again and quarantines the row."""
        found = {
            image: path
            for _, _, _, row in batch
            if (path := paths.get(image := _image_name(row))) is not None
        }
        for path in dict.fromkeys(found.values()):
            with contextlib.suppress(Exception):
                cache.fetch(path)
        return found

    def _encode_file(self, path: Path) -> bytes:
        return image_file_to_png(
            path, self.options.image_size, self.options.png_compress_level, self.options.limits
        )

    def _pkl_records(
        self,
        row: Any,
        split: str,
        index: int,
        cache: PngCache,
        found: dict[str, Path],
    ) -> list[dict[str, Any]]:
        if not isinstance(row, dict):
            raise BadInput("QA row is not a dict")
        image = _image_name(row)
        if not image:
            raise BadInput("QA row has no image")
        path = found.get(image) or self._image_path(split, image)
        rel = path.relative_to(self.confinement.root).as_posix()
        record = self._record(row, f"{split}:{index}", normalize_split(split), cache.get(path), rel)
        return [record]

    def _image_path(self, split: str, image: str) -> Path:
        folder = self.pvqa / "images" / split
        listed = self._listed_image(folder, image)
        if listed is not None:
            return listed
        for suffix in IMAGE_SUFFIXES:
            path = self.safe_path(image + suffix, folder)
            if path.is_file():
                return path
        raise BadInput(f"image file missing: {image}")

    def _listed_image(self, folder: Path, image: str) -> Path | None:
        """What the suffix loop of `_image_path` finds, read from one listing of the folder
        instead of two system calls per name tried: the first of `image` + suffix that is
        there, when it is a regular file (no link) and `image` a plain name. None leaves
        every other case (a link, a missing file, a name with a slash) to that loop."""
        if image in (".", "..") or not _PLAIN_NAME.fullmatch(image):
            return None
        try:
            resolved = self.confinement.folder(folder)
        except BadInput:
            return None
        if resolved not in self._listings:
            self._listings[resolved] = _regular_files(resolved)
        listing = self._listings[resolved]
        for suffix in IMAGE_SUFFIXES:
            regular = listing.get(image + suffix)
            if regular is not None:
                return resolved / (image + suffix) if regular else None
        return None

    @cached_property
    def _listings(self) -> dict[Path, dict[str, bool]]:
        """`_regular_files` of each image folder listed so far, by resolved path."""
        return {}

    # ------------------------------------------------------------------ Parquet copy

    def _parquet_items(self) -> Iterator[Outcome]:
        cache = PngCache(self._encode_bytes)
        counters: dict[str, int] = {}
        for split, path in self.parquet_files():
            rel = self.rel(path)
            try:
                batches = open_shard(self.listing(path)).iter_batches(
                    batch_size=256, columns=["image", "question", "answer"]
                )
                for batch in batches:
                    for row in batch.to_pylist():
                        index = counters.get(split, 0)
                        counters[split] = index + 1
                        yield self.guard(
                            f"{split} row {index}",
                            rel,
                            lambda row=row, split=split, index=index: self._parquet_records(
                                row, split, index, cache
                            ),
                        )
            except Exception as exc:  # noqa: BLE001 - unreadable or wrong-schema file
                yield Outcome.reject(rel, f"unreadable Parquet: {type(exc).__name__}: {exc}", rel)

    def _encode_bytes(self, data: bytes) -> bytes:
        image = load_image_bytes(data, limits=self.options.limits)
        return encode_png(image, self.options.image_size, self.options.png_compress_level)

    def _parquet_records(
        self, row: dict[str, Any], split: str, index: int, cache: PngCache
    ) -> list[dict[str, Any]]:
        value = row.get("image")
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise BadInput("row has no image bytes")
        name = (value.get("path") if isinstance(value, dict) else None) or (
            "sha256:" + hashlib.sha256(data).hexdigest()[:16]
        )
        record = self._record(dict(row, image=name), f"{split}:{index}", split, cache.get(data))
        return [record]

    # ------------------------------------------------------------------ shared

    def _record(
        self,
        row: dict[str, Any],
        orig_id: str,
        split: str,
        png: bytes,
        orig_path: str | None = None,
    ) -> dict[str, Any]:
        question = str(row.get("question") or "").strip()
        answer = answer_text(row.get("answer"))
        if not question or not answer:
            raise BadInput("QA row has an empty question or answer")
        return new_record(
            source=self.name,
            orig_id=orig_id,
            split=split,
            kind="vqa",
            modality="Pathology",
            image=png,
            question=question,
            answer=answer,
            answer_type=normalize_answer_type(None, answer),
            orig_path=orig_path,
            meta=meta_json(image=row.get("image"), layout=self.layout),
        )


def _image_name(row: Any) -> str:
    """The image a pickled QA row names ("" for none, or for a row that is not a dict)."""
    return str(row.get("image") or "").strip() if isinstance(row, dict) else ""
