"""LLaVA-style conversation JSON: LLaVA-Med, PubMedVision, VL-Health and the user's own data.

Layout: one or more `*.json` (a list of samples) or `*.jsonl` (one sample a line) files at the
source root, and the images they name. A sample is

    {"id": ..., "image": "path.jpg" | ["a.jpg", "b.jpg"],
     "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}],
     "modality": "Computed Tomography" (optional, PubMedVision), "body_part": (optional),
     "split": "train" | "validation" | "test" (optional, default train)}

Image paths resolve against `options.extra["image_root"]` (relative to the source root) if
set, else against the root, then `<root>/images/`. A path that leaves the source root
(`../../etc/passwd`, `/etc/passwd`) or names no file is quarantined. Files that carry the
absolute paths of the machine they were made on name that prefix in
`options.extra["image_prefix"]`; it is removed before the path is resolved.

One record per sample, kind "conversation". The reader is offered for a hospital's own data,
so turns are scrubbed of PHI (`deid.scrub_text`, line by line: names, dates, record numbers
and phones go, measurements stay), and row ids and file names (the listing, the image paths,
in `orig_id`, `orig_path`, `meta` and the quarantine table) become keyed pseudonyms with the
source's salt (`row-...`, `file-...`); the paper's public sets keep the ids and names that
look published (`public_token`). Turns whose speaker the trainer does not know, an `<image>`
in an answer, or a count of `<image>` placeholders other than the images named are
quarantined (`check_placeholders`). Multi-image samples keep
their first image; `meta.n_images` records how many the sample named, so the mixture can drop
them (and count them) where a task takes one image.

The readers of the paper's LLaVA-style datasets (`llava_sets`, `vl_health_generation`)
subclass this one and change only what differs: which listing files (`listing_globs`, or
`options.extra["files"]`), which rows are left out by configuration (`skip_reason`), the
modality and extra meta of a row, and whether published ids and names are kept
(`public_names`).

Duplicate `id`s in one file give duplicate record ids; the shard checks catch those (tracking
ids here would make memory grow with the 1.3M-sample files).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from healthgpt.data.decode.deid import pseudonym, scrub_text
from healthgpt.data.decode.imaging import image_file_to_png
from healthgpt.data.json_rows import JsonRowError, iter_json_rows
from healthgpt.data.limits import printable_name
from healthgpt.data.options import ReaderOptions
from healthgpt.data.schema import Quarantined, new_record
from healthgpt.data.sources.base import BadInput, LayoutError, Outcome, SourceReader, meta_json
from healthgpt.data.tasks import IMAGE_TOKEN, SPEAKER_ROLES
from healthgpt.data.vocab import modality_from_text, normalize_body_part, normalize_split


class LlavaJsonReader(SourceReader):
    name = "llava_json"
    expected_layout = """\
<root>/
  *.json   (a list of {id, image, conversations: [{from, value}, ...]})  and/or
  *.jsonl  (one such sample a line)
  images named by the samples, relative to options.extra["image_root"], the root, or
  <root>/images/"""
    # The listing files, as globs relative to the root (`options.extra["files"]` overrides).
    listing_globs: ClassVar[tuple[str, ...]] = ("*.json", "*.jsonl")
    # Run every turn through `deid.scrub_text` (line by line, so `<image>` placement and
    # line breaks stay as they were).
    scrub_turns: ClassVar[bool] = True
    # Which row ids and file names (listing files, image paths) are copied verbatim: None,
    # the default for a reader offered for a hospital's own data, copies none (each becomes
    # a keyed pseudonym, `deid.pseudonym` with the source's salt); the paper's public sets
    # copy those that look like their published ids and names (`public_token`).
    public_names: ClassVar[bool] = False
    extra_keys = frozenset({"files", "image_root", "image_prefix"})

    @classmethod
    def check_options(cls, options: ReaderOptions) -> None:
        super().check_options(options)
        listing_globs(options.extra.get("files"))
        for key in ("image_root", "image_prefix"):
            value = options.extra.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"extra {key} must be a string, got {value!r}")

    def json_files(self) -> list[Path]:
        try:
            globs = listing_globs(self.options.extra.get("files")) or self.listing_globs
        except ValueError as exc:
            raise LayoutError(self._layout_message(str(exc))) from None
        found = {p for pattern in globs for p in self.root.glob(pattern) if p.is_file()}
        return sorted(p for p in found if p.suffix in (".json", ".jsonl"))

    def image_roots(self) -> list[Path]:
        configured = self.options.extra.get("image_root")
        if configured:
            return [self.safe_path(str(configured))]
        return [self.root, self.root / "images"]

    def layout_problem(self) -> str | None:
        if not self.json_files():
            globs = listing_globs(self.options.extra.get("files")) or self.listing_globs
            return f"no listing file matching {', '.join(map(str, globs))} under the root"
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
            name = self.shown_name(self.rel(path))
            for index, sample in enumerate(
                iter_json_rows(self.listing(path), limits=self.options.limits)
            ):
                item = f"{name}#{index}"
                if isinstance(sample, JsonRowError):
                    yield Outcome.reject(item, f"unparseable JSON: {sample}", name)
                    continue
                skip = self.skip_reason(sample)
                if skip:
                    self.skipped[skip] += 1
                    continue
                key_image = self.key_image(sample)
                outcome = self.guard(
                    item,
                    self.shown_name(key_image) if key_image else name,
                    lambda s=sample, f=name, i=index: self._records(s, f, i, roots),
                    key=self._image_key(sample, roots) if self.options.chunk else None,
                )
                yield self._shown_outcome(outcome, sample)

    # --- ids and file names in outputs ------------------------------------------------------

    def shown_id(self, sample: dict[str, Any]) -> str | None:
        """The row's `id` as records may carry it: verbatim when `public_names` and it looks
        like a published id, else a keyed pseudonym (`row-...`); None when there is none.
        An id that is neither a string nor an integer is refused."""
        value = sample.get("id")
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise BadInput(f"row id is a {type(value).__name__}, not a string or an integer")
        text = str(value)
        if self.public_names and public_token(text):
            return text
        return pseudonym(printable_name(text), self.options.deid_salt, prefix="row")

    def shown_name(self, rel: str) -> str:
        """A file name (a listing, an image path as a row names it or as found) as outputs
        may carry it: verbatim when `public_names` and it looks like a published name, else
        a keyed pseudonym (`file-...`)."""
        if self.public_names and public_token(rel):
            return rel
        return pseudonym(printable_name(rel), self.options.deid_salt, prefix="file")

    def _shown_outcome(self, outcome: Outcome, sample: Any) -> Outcome:
        """A quarantine reason without the file names the row gave (an image path in "image
        file missing: ..."): each is replaced by its shown form."""
        if outcome.quarantined is None or not isinstance(sample, dict):
            return outcome
        reason = outcome.quarantined.reason
        named = [i for i in _named_paths(sample, self.path_fields()) if i]
        for raw in sorted({*named, *(PurePosixPath(n).name for n in named)}, key=len, reverse=True):
            if raw and raw in reason:
                reason = reason.replace(raw, self.shown_name(raw))
        if reason != outcome.quarantined.reason:
            outcome.quarantined = Quarantined(
                outcome.quarantined.item, reason, outcome.quarantined.rel_path
            )
        return outcome

    def path_fields(self) -> tuple[str, ...]:
        """The row fields that name files (their values are hidden in quarantine reasons)."""
        return ("image",)

    # --- what subclasses change ------------------------------------------------------------

    def skip_reason(self, sample: Any) -> str | None:
        """Why a row is left out by configuration (counted in `self.skipped`), or None."""
        return None

    def modality_of(self, sample: dict[str, Any]) -> str:
        return modality_from_text(sample.get("modality")) or "Other"

    def extra_meta(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Source-specific meta fields of a row, beside the ones every row gets."""
        return {}

    def key_image(self, sample: Any) -> str | None:
        """The image path (as the row names it) that places the row in a chunk."""
        return _rel_path(sample)

    # --- shared steps ----------------------------------------------------------------------

    def _image_key(self, sample: Any, roots: list[Path]) -> str | None:
        """The chunk key of the sample's image as it lies on disk (found by a stat, not read):
        the JSON names it relative to an image root, the fingerprint by its path in the source."""
        first = self.key_image(sample)
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
        conversations = self.turns(sample)
        images = image_list(sample)
        if not images:
            raise BadInput("sample names no image")
        check_placeholders(conversations, len(images))
        path = self._resolve(images[0], roots)
        return [
            new_record(
                source=self.name,
                orig_id=self.orig_id(sample, file_name, index),
                split=row_split(sample),
                kind="conversation",
                modality=self.modality_of(sample),
                image=self.png(path),
                body_part=normalize_body_part(sample.get("body_part")),
                conversations=conversations,
                orig_path=self.found_path(path),
                meta=meta_json(
                    sample_id=self.shown_id(sample),
                    file=file_name,
                    n_images=len(images),
                    modality_label=sample.get("modality"),
                    **self.extra_meta(sample),
                ),
            )
        ]

    def turns(self, sample: dict[str, Any]) -> list[dict[str, str]]:
        """The row's turns, checked for shape; scrubbed where `scrub_turns` says so."""
        turns = _conversations(sample.get("conversations"))
        if self.scrub_turns:
            turns = [{"from": t["from"], "value": scrub_lines(t["value"])} for t in turns]
        return turns

    def png(self, path: Path) -> bytes:
        """The image file as the normalized PNG every record carries."""
        return image_file_to_png(
            path, self.options.image_size, self.options.png_compress_level, self.options.limits
        )

    def found_path(self, path: Path) -> str:
        """A resolved image's path relative to the source root (the record's `orig_path`),
        as `shown_name` shows it."""
        return self.shown_name(path.relative_to(self.root.resolve()).as_posix())

    def orig_id(self, sample: dict[str, Any], file_name: str, index: int) -> str:
        """`<file>:<id>`, or `<file>#<row>` for a row without an id (`file_name` as shown)."""
        sample_id = self.shown_id(sample)
        return f"{file_name}:{sample_id}" if sample_id is not None else f"{file_name}#{index}"

    def _resolve(self, relative: str, roots: list[Path]) -> Path:
        """The first existing file the path names under the image roots, refusing escapes."""
        prefix = self.options.extra.get("image_prefix")
        if prefix and relative.startswith(str(prefix)):
            relative = relative[len(str(prefix)) :].lstrip("/")
        candidates = [self.safe_path(relative, root) for root in roots]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise BadInput(f"image file missing: {relative}")


def listing_globs(files: Any) -> tuple[str, ...]:
    """`options.extra["files"]` (a glob or a list of globs) checked: each relative to the
    source root, without `..`; () when not set. Raises ValueError naming the bad one."""
    if files in (None, "", []):
        return ()
    globs = [files] if isinstance(files, str) else files
    if not isinstance(globs, list) or not all(isinstance(g, str) and g for g in globs):
        raise ValueError(f"extra files must be a glob or a list of globs, got {files!r}")
    for pattern in globs:
        parts = PurePosixPath(pattern).parts
        if PurePosixPath(pattern).is_absolute() or ".." in parts:
            raise ValueError(f"extra files glob {pattern!r} must be relative to the source root")
    return tuple(globs)


def image_list(sample: dict[str, Any]) -> list[str]:
    """The image paths a row names (`image` as a path or a list), stripped; [] when the
    field is missing, and an error when it holds anything but non-empty strings."""
    images = sample.get("image")
    images = images if isinstance(images, list) else [images] if images else []
    if not all(isinstance(i, str) and i.strip() for i in images):
        raise BadInput("sample names no image")
    return [i.strip() for i in images]


# A published id or file name: a short token of letters, digits and `_ . - /`, that the text
# scrubber leaves as it is (no date, no long digit run). Anything else (spaces, commas, a
# name with a birth date) is pseudonymized even in a public set.
_TOKEN = re.compile(r"[A-Za-z0-9_.\-/]{1,128}")
# The published ids and names that hold long digit runs (which the scrubber takes for record
# numbers): LAION/CC/SBU image numbers (`004539375`, `00453/004539375.jpg`) and PubMed
# figure ids (`31000001_F1`, `PMC7398722_F1.jpg`), under any folders.
PUBLIC_ID_SHAPES = re.compile(
    r"(?:[A-Za-z0-9_\-]+/)*(?:\d{5}/)?(?:\d{9}|(?:PMC)?\d{1,10}_[A-Za-z0-9]{1,10})(?:\.jpg)?"
)


def public_token(text: str) -> bool:
    """Does `text` look like a published id or file name: `_TOKEN`, and unchanged by
    `deid.scrub_text` or one of the `PUBLIC_ID_SHAPES`?"""
    if not _TOKEN.fullmatch(text):
        return False
    return scrub_text(text) == text or bool(PUBLIC_ID_SHAPES.fullmatch(text))


def _named_paths(sample: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    """The strings a row's path fields hold (a path or a list of paths)."""
    out: list[str] = []
    for field in fields:
        value = sample.get(field)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                out.extend([item, item.strip()])
    return out


def row_split(sample: dict[str, Any]) -> str:
    try:
        return normalize_split(sample.get("split"))
    except ValueError as exc:
        raise BadInput(str(exc)) from exc


def scrub_lines(text: str) -> str:
    """`deid.scrub_text` of each line: names, dates, numbers and phones go, while line
    breaks (and so an `<image>` token on a line of its own) stay where they were."""
    return "\n".join(scrub_text(line) for line in text.split("\n"))


def _conversations(turns: Any) -> list[dict[str, str]]:
    """Turns verbatim, checked for shape: a non-empty list of {from: str, value: str}, each
    `from` a speaker the trainer knows (`tasks.SPEAKER_ROLES`)."""
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
        if turn["from"] not in SPEAKER_ROLES:
            raise BadInput(
                f"unknown speaker {turn['from'][:20]!r} (known: {', '.join(SPEAKER_ROLES)})"
            )
        out.append({"from": turn["from"], "value": turn["value"]})
    return out


def check_placeholders(turns: list[dict[str, str]], n_images: int, answer_images: int = 0) -> None:
    """Refuse turns the trainer cannot format: the user turns must hold one `<image>` per
    image the row names, and assistant turns at most `answer_images` (a generation row's
    answer is its output image; a comprehension answer holds none)."""
    asked = sum(t["value"].count(IMAGE_TOKEN) for t in turns if _role(t) == "user")
    answered = sum(t["value"].count(IMAGE_TOKEN) for t in turns if _role(t) == "assistant")
    if answered > answer_images:
        raise BadInput(
            f"{IMAGE_TOKEN} in an assistant turn"
            if answer_images == 0
            else f"{answered} {IMAGE_TOKEN} placeholders in the answer, at most {answer_images}"
        )
    if asked != n_images:
        raise BadInput(
            f"{asked} {IMAGE_TOKEN} placeholders in the question for {n_images} image(s)"
        )


def _role(turn: dict[str, str]) -> str:
    return SPEAKER_ROLES[turn["from"]]


def _rel_path(sample: Any) -> str | None:
    """The first image path a sample names, for the quarantine table."""
    if not isinstance(sample, dict):
        return None
    image = sample.get("image")
    image = image[0] if isinstance(image, list) and image else image
    return image if isinstance(image, str) else None
