"""The LLaVA-style conversation datasets the HealthGPT paper names, each in its official layout.

They share `LlavaJsonReader`'s row handling (streamed JSON, confined image paths, one
conversation record per row) and differ only in their listing files, the rows left out by
configuration, and where a row's modality and origin come from:

- `llava_558k`: LLaVA-Pretrain's `blip_laion_cc_sbu_558k.json` (captions of natural images;
  the `<image>` token starts or ends the human turn), images in `<5 digits>/<9 digits>.jpg`.
- `pubmedvision`: `PubMedVision_Alignment_VQA.json` and `PubMedVision_InstructionTuning_VQA.json`,
  image lists (`["images/x.jpg", ...]`) and modality / body-part labels; multi-image rows are
  left out by default, as the paper did (`options.extra["multi_image"]`).
- `llava_med`: `llava_med_instruct_60k_inline_mention.json`, images `<pair id>.jpg` under
  `images/`, modality from the row's `domain` flags.
- `vl_health_alignment`: the released stage-1 file, LLaVA-558k and PubMedVision rows mixed;
  the row `id` tells which (`meta.origin`).
- `vl_health_comprehension`: the released comprehension instruction file.

Every turn goes through `deid.scrub_text` (line by line): these are public data sets, but
free text from papers and the web may still name people.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, ClassVar

from healthgpt.data.options import ReaderOptions
from healthgpt.data.sources.base import BadInput
from healthgpt.data.sources.llava_json import LlavaJsonReader
from healthgpt.data.tasks import IMAGE_TOKEN
from healthgpt.data.vocab import modality_from_text

MULTI_IMAGE_CHOICES = ("drop", "first")


class _PaperJsonReader(LlavaJsonReader):
    """The paper's LLaVA-style datasets: scrubbed turns, named listing files."""

    scrub_turns = True
    public_names = True

    def extra_meta(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {"image_token": image_token_place(sample)}


def multi_image_choice(options: ReaderOptions) -> str:
    """`options.extra["multi_image"]`, checked (the registry checks it when it loads)."""
    choice = options.extra.get("multi_image", "drop")
    if choice not in MULTI_IMAGE_CHOICES:
        raise ValueError(f"multi_image {choice!r} not in {MULTI_IMAGE_CHOICES}")
    return choice


class _MultiImageRule(LlavaJsonReader):
    """Rows naming several images are left out (`skipped["multi_image"]`) unless
    `options.extra["multi_image"]` is "first" (keep the first image, `meta.n_images` says
    how many there were)."""

    extra_keys = LlavaJsonReader.extra_keys | {"multi_image"}

    @classmethod
    def check_options(cls, options: ReaderOptions) -> None:
        super().check_options(options)
        multi_image_choice(options)

    def multi_image(self) -> str:
        return multi_image_choice(self.options)

    def skip_reason(self, sample: Any) -> str | None:
        if self.multi_image() == "first" or not isinstance(sample, dict):
            return None
        images = sample.get("image")
        return "multi_image" if isinstance(images, list) and len(images) > 1 else None


class Llava558kReader(_PaperJsonReader):
    name = "llava_558k"
    listing_globs = ("blip_laion_cc_sbu_558k.json",)
    expected_layout = """\
<root>/                              (liuhaotian/LLaVA-Pretrain, images.zip unpacked)
  blip_laion_cc_sbu_558k.json        [{id: "004539375", image: "00453/004539375.jpg",
                                       conversations: [human "<image>\\n..." or "...\\n<image>",
                                                       gpt caption]}]
  00453/004539375.jpg ...            (one folder per first 5 digits of the id)
  blip_laion_cc_sbu_558k_meta.json   (BLIP captions and URLs; not read)"""


class PubMedVisionReader(_MultiImageRule, _PaperJsonReader):
    name = "pubmedvision"
    listing_globs = ("PubMedVision_Alignment_VQA.json", "PubMedVision_InstructionTuning_VQA.json")
    expected_layout = """\
<root>/                                   (FreedomIntelligence/PubMedVision)
  PubMedVision_Alignment_VQA.json          [{id, image: ["images/<name>.jpg", ...],
  PubMedVision_InstructionTuning_VQA.json    conversations, modality, body_part}]
  images/<name>.jpg                        (images_<i>.zip unpacked with `unzip -j`)
Rows naming several images are left out unless options.extra.multi_image is "first"."""

    def extra_meta(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {**super().extra_meta(sample), "body_part_label": sample.get("body_part")}


# LLaVA-Med's `domain` flags and the modality each names; `gross` (photographs of specimens)
# has no modality of its own.
LLAVA_MED_DOMAINS = {
    "chest_xray": "X-Ray",
    "mri": "MRI",
    "ct_scan": "CT",
    "histology": "Pathology",
    "gross": "Other",
}


class LlavaMedReader(_PaperJsonReader):
    name = "llava_med"
    listing_globs = ("llava_med_instruct_60k_inline_mention.json",)
    expected_layout = """\
<root>/                                        (microsoft/LLaVA-Med data download)
  llava_med_instruct_60k_inline_mention.json   [{id: "<PMID>_<figure>", image: "<id>.jpg",
                                                 domain: {chest_xray, mri, ct_scan, histology,
                                                          gross: bool}, conversations}]
  images/<PMID>_<figure>.jpg                   (fetched with llava_med_image_urls.jsonl)
Other instruct files (10k, 60k, fig_captions) are read with options.extra.files."""

    def modality_of(self, sample: dict[str, Any]) -> str:
        flags = domain_flags(sample)
        modalities = {LLAVA_MED_DOMAINS[d] for d in flags}
        return modalities.pop() if len(modalities) == 1 else "Other"

    def extra_meta(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {**super().extra_meta(sample), "domain": domain_flags(sample) or None}


def domain_flags(sample: dict[str, Any]) -> list[str]:
    """The LLaVA-Med domains a row is flagged with, in a fixed order."""
    domain = sample.get("domain")
    if domain is None:
        return []
    if not isinstance(domain, dict):
        raise BadInput("domain is not a JSON object of flags")
    return [name for name in LLAVA_MED_DOMAINS if domain.get(name) is True]


# The origin of a row of the released alignment file, by its `id`, as shell-style globs
# (`fnmatch`, not regular expressions: a user's pattern cannot backtrack for hours): LLaVA-558k
# ids are the 9-digit image numbers of LAION/CC/SBU; every other id is a PubMedVision row.
ORIGIN_PATTERNS: tuple[tuple[str, str], ...] = (
    ("llava_558k", "[0-9]" * 9),
    ("pubmedvision", "?*"),
)
# Ids longer than this are quarantined before any pattern sees them.
MAX_ID_CHARS = 256


class VlHealthAlignmentReader(_MultiImageRule, _PaperJsonReader):
    name = "vl_health_alignment"
    listing_globs = ("*.json", "Alignment/comprehension/*.json")
    expected_layout = """\
<root>/                     (lintw/VL-Health on the Hugging Face Hub, or its
  Alignment/comprehension/train_data.json   Alignment/comprehension folder as the root)
                            [{id, image, conversations}]: LLaVA-558k rows (9-digit ids) and
                            single-image PubMedVision rows
  the images the rows name, relative to the root (options.extra.image_root, image_prefix
  for files that carry absolute paths)"""
    origin_patterns: ClassVar[tuple[tuple[str, str], ...]] = ORIGIN_PATTERNS
    extra_keys = _MultiImageRule.extra_keys | {"origin_patterns"}

    @classmethod
    def check_options(cls, options: ReaderOptions) -> None:
        super().check_options(options)
        patterns = options.extra.get("origin_patterns")
        if patterns is not None and not (
            isinstance(patterns, dict)
            and patterns
            and all(isinstance(k, str) and isinstance(v, str) and v for k, v in patterns.items())
        ):
            raise ValueError(
                "origin_patterns must map each origin to a glob of row ids (fnmatch), "
                f"got {patterns!r}"
            )

    def origin(self, sample: dict[str, Any]) -> str:
        """Which dataset a row comes from, by its id (`options.extra["origin_patterns"]`,
        a mapping of origin to an `fnmatch` glob of ids, the first match wins, overrides
        the default rule)."""
        sample_id = sample.get("id")
        if sample_id in (None, ""):
            raise BadInput("row has no id to tell its origin")
        text = str(sample_id)
        if len(text) > MAX_ID_CHARS:
            raise BadInput(f"row id longer than {MAX_ID_CHARS} characters")
        patterns = self.options.extra.get("origin_patterns") or dict(self.origin_patterns)
        for origin, pattern in patterns.items():
            if fnmatchcase(text, pattern):
                return origin
        raise BadInput("row id matches no origin pattern")

    def modality_of(self, sample: dict[str, Any]) -> str:
        return super().modality_of(sample) if self.origin(sample) == "pubmedvision" else "Other"

    def extra_meta(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {**super().extra_meta(sample), "origin": self.origin(sample)}


class VlHealthComprehensionReader(_PaperJsonReader):
    name = "vl_health_comprehension"
    listing_globs = ("*.json",)
    expected_layout = """\
<root>/                     (the comprehension instruction folder of lintw/VL-Health)
  *.json                    [{image, conversations: [human "<image>\\n...", gpt ...]}]
  the images the rows name, relative to the root (options.extra.image_root, image_prefix
  for files that carry absolute paths)"""

    def modality_of(self, sample: dict[str, Any]) -> str:
        """The row's modality label, else the one modality its first question names."""
        label = modality_from_text(sample.get("modality"))
        if label:
            return label
        turns = sample.get("conversations") or []
        first = turns[0].get("value") if turns and isinstance(turns[0], dict) else None
        return modality_from_text(first) or "Other"


def image_token_place(sample: dict[str, Any]) -> str | None:
    """Where the first human turn holds `<image>`: "start", "end", "middle", or None."""
    for turn in sample.get("conversations") or []:
        if isinstance(turn, dict) and turn.get("from") == "human":
            text = str(turn.get("value") or "").strip()
            if IMAGE_TOKEN not in text:
                return None
            if text.startswith(IMAGE_TOKEN):
                return "start"
            return "end" if text.endswith(IMAGE_TOKEN) else "middle"
    return None


__all__ = [
    "LLAVA_MED_DOMAINS",
    "Llava558kReader",
    "LlavaMedReader",
    "PubMedVisionReader",
    "VlHealthAlignmentReader",
    "VlHealthComprehensionReader",
]
