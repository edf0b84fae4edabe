"""VQA-RAD (Lau et al. 2018): 3515 clinician-written QA pairs about 315 radiology images.

Official layout (OSF release, https://osf.io/89kps/):

    VQA_RAD Dataset Public.json     list of QA rows (qid, image_name, image_organ, question,
                                    answer, answer_type, question_type, phrase_type, ...)
    VQA_RAD Image Folder/<image_name>.jpg

Splits: rows whose `phrase_type` starts with "test" (test_freeform, test_para) are the test
set, everything else is train, as in the paper's evaluation protocol. The same image appears
in both splits (the dataset was built that way); the mixture's decontamination handles it.

Modality: VQA-RAD has no modality field. The reader infers one per *image* from the image's
own QA rows, in this order:
1. rows with question_type MODALITY: the open answer ("ct", "mri - flair", "x-ray") or, for a
   closed question answered "yes", the question ("Is this an MRI?");
2. modality words in the image's other questions ("... on this CT?");
3. otherwise "Other".
The rule used is kept in `meta.modality_source`. This needs one extra pass over the JSON, with
memory bounded by the number of images.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthgpt.data.decode.imaging import image_file_to_png
from healthgpt.data.json_rows import JsonRowError, iter_json_rows
from healthgpt.data.schema import new_record
from healthgpt.data.sources.base import BadInput, Outcome, SourceReader, meta_json
from healthgpt.data.sources.png_cache import PngCache
from healthgpt.data.vocab import (
    answer_text,
    modality_from_text,
    normalize_answer_type,
    normalize_body_part,
)

JSON_NAME = "VQA_RAD Dataset Public.json"
IMAGE_DIR = "VQA_RAD Image Folder"


class VqaRadReader(SourceReader):
    name = "vqa_rad"
    expected_layout = f"""\
<root>/
  {JSON_NAME}        (a JSON list of QA rows: qid, image_name, image_organ,
                                    question, answer, answer_type, question_type, phrase_type)
  {IMAGE_DIR}/<image_name>      (synpicNNNNN.jpg)"""

    def layout_problem(self) -> str | None:
        missing = [n for n in (JSON_NAME, IMAGE_DIR) if not (self.root / n).exists()]
        return f"missing {', '.join(repr(n) for n in missing)}" if missing else None

    def items(self) -> Iterator[Outcome]:
        modalities = self._infer_modalities()
        cache = PngCache(self._encode)
        seen: Counter[str] = Counter()
        for index, row in enumerate(
            iter_json_rows(self.listing(self.root / JSON_NAME), limits=self.options.limits)
        ):
            if isinstance(row, JsonRowError):
                yield Outcome.reject(f"row {index}+", f"unparseable JSON: {row}", JSON_NAME)
                continue
            if not isinstance(row, dict):
                yield Outcome.reject(f"row {index}", "QA row is not a JSON object", JSON_NAME)
                continue
            qid = str(row.get("qid", f"row{index}"))
            seen[qid] += 1
            orig_id = qid if seen[qid] == 1 else f"{qid}#{seen[qid]}"
            image_name = str(row.get("image_name") or "").strip()
            rel_path = f"{IMAGE_DIR}/{image_name}" if image_name else None
            yield self.guard(
                f"qid {orig_id}",
                rel_path,
                lambda row=row, orig_id=orig_id: self._records(row, orig_id, modalities, cache),
            )

    def _encode(self, path: Path) -> bytes:
        return image_file_to_png(
            path, self.options.image_size, self.options.png_compress_level, self.options.limits
        )

    def _records(
        self,
        row: dict[str, Any],
        orig_id: str,
        modalities: dict[str, tuple[str, str]],
        cache: PngCache,
    ) -> list[dict[str, Any]]:
        question = str(row.get("question") or "").strip()
        answer = answer_text(row.get("answer"))
        image_name = str(row.get("image_name") or "").strip()
        if not image_name:
            raise BadInput("QA row has no image_name")
        if not question or not answer:
            raise BadInput("QA row has an empty question or answer")
        path = self.safe_path(image_name, self.root / IMAGE_DIR)
        png = cache.get(path)
        phrase_type = str(row.get("phrase_type") or "").strip().lower()
        modality, modality_source = modalities.get(image_name, ("Other", "unknown"))
        return [
            new_record(
                source=self.name,
                orig_id=orig_id,
                split="test" if phrase_type.startswith("test") else "train",
                kind="vqa",
                modality=modality,
                image=png,
                body_part=normalize_body_part(row.get("image_organ")),
                question=question,
                answer=answer,
                answer_type=normalize_answer_type(row.get("answer_type"), answer),
                orig_path=f"{IMAGE_DIR}/{image_name}",
                meta=meta_json(
                    qid=row.get("qid"),
                    image_name=image_name,
                    image_organ=_clean(row.get("image_organ")),
                    question_type=_clean(row.get("question_type")),
                    phrase_type=phrase_type or None,
                    modality_source=modality_source,
                ),
            )
        ]

    def _infer_modalities(self) -> dict[str, tuple[str, str]]:
        """image_name -> (modality, rule used), from a first pass over the QA rows."""
        votes: dict[str, dict[str, Counter[str]]] = defaultdict(
            lambda: {"modality_question": Counter(), "question_text": Counter()}
        )
        for row in iter_json_rows(self.listing(self.root / JSON_NAME), limits=self.options.limits):
            if not isinstance(row, dict) or not row.get("image_name"):
                continue
            vote = _modality_vote(row)
            if vote:
                votes[str(row["image_name"]).strip()][vote[1]][vote[0]] += 1
        result: dict[str, tuple[str, str]] = {}
        for image, by_rule in votes.items():
            for rule in ("modality_question", "question_text"):
                if by_rule[rule]:
                    # most common; ties broken alphabetically so the result is deterministic
                    best = sorted(by_rule[rule].items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
                    result[image] = (best, rule)
                    break
        return result


def _modality_vote(row: dict[str, Any]) -> tuple[str, str] | None:
    """(modality, rule) that one QA row supports, or None."""
    question = str(row.get("question") or "")
    answer = answer_text(row.get("answer")).lower()
    if "modality" in str(row.get("question_type") or "").lower():
        if answer == "no":  # "Is this a CT?" - "no" names nothing
            return None
        found = modality_from_text(question if answer == "yes" else answer)
        return (found, "modality_question") if found else None
    found = modality_from_text(question)
    return (found, "question_text") if found else None


def _clean(value: object) -> str | None:
    text = str(value or "").strip()
    return text or None
