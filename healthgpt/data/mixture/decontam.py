"""Keep evaluation data out of training: subject-level held-out splits and image decontamination.

- Held-out generation splits are made by *subject*, never by slice: neighbouring slices of one
  volume are near copies, so a slice-level split would test on training data. A subject is
  held out when the hash of (salt, source, subject) falls below the test fraction, which is
  deterministic and independent of record order and of the other subjects.
- Decontamination: a training sample that carries an image (input or target) identical to, or
  a near-duplicate of, an image of any evaluation sample is removed, with the reason and the
  evaluation sample it matched. This catches VQA-RAD, whose test questions are asked about
  images that also appear in its training questions. For the sources configured so
  (`decontaminate_by_question`), a training question is removed only when the evaluation
  sample on that image also asks the same question: their official training splits are kept.
"""

from __future__ import annotations

import hashlib
from typing import Any

import polars as pl

EVAL_EXACT = "eval_exact"
EVAL_NEAR = "eval_near_duplicate"


def subject_key(record: dict[str, Any]) -> str:
    """The unit of the held-out split: the subject, else the original volume, else the item."""
    for value in (record.get("subject_id"), record.get("orig_path"), record.get("orig_id")):
        if value:
            return str(value)
    return str(record["id"])


def is_held_out(source: str, subject: str, salt: str, fraction: float) -> bool:
    digest = hashlib.sha256(f"{salt}\x1f{source}\x1f{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def effective_split(
    record: dict[str, Any],
    source: str,
    subject_split_sources: list[str],
    salt: str,
    fraction: float,
) -> str:
    """The record's split in the mixture: re-made by subject for sources without a test split."""
    if source not in subject_split_sources:
        return record["split"]
    return "test" if is_held_out(source, subject_key(record), salt, fraction) else "train"


def _image_column(frame: pl.DataFrame, column: str, on: tuple[str, ...] = ()) -> pl.DataFrame:
    """One row per (image `column` value, sample) from the input and target images, with the
    extra match columns `on`."""
    return pl.concat(
        [
            frame.select(pl.col(f"{side}_{column}").alias(column), *on, "seq")
            for side in ("img", "tgt")
        ]
    ).drop_nulls([column, *on])


def _first_per(frame: pl.DataFrame, column: str, on: tuple[str, ...]) -> pl.DataFrame:
    """The first evaluation sample (lowest seq) per image `column` value (and `on` values)."""
    return (
        _image_column(frame, column, on)
        .group_by(column, *on)
        .agg(pl.col("seq").min().alias("matched_seq"))
    )


def _first_hit(hits: pl.DataFrame) -> pl.DataFrame:
    return hits.group_by("seq").agg(pl.col("matched_seq").min())


def _matches(
    train: pl.DataFrame, evals: pl.DataFrame, near: pl.DataFrame, on: tuple[str, ...]
) -> pl.DataFrame:
    """(seq, reason, matched_seq) of the training samples whose image is, or neighbours, an
    evaluation sample's with equal `on` columns; an exact match wins over a near one."""
    exact = _first_hit(
        _image_column(train, "key", on).join(_first_per(evals, "key", on), on=["key", *on])
    ).with_columns(reason=pl.lit(EVAL_EXACT))
    eval_phash = _first_per(evals, "phash", on).rename({"phash": "near"})
    near_hits = (
        _image_column(train, "phash", on)
        .join(near, on="phash")
        .join(eval_phash, on=["near", *on])
        .select("seq", "matched_seq")
        .join(exact.select("seq"), on="seq", how="anti")
    )
    near_rows = _first_hit(near_hits).with_columns(reason=pl.lit(EVAL_NEAR))
    return pl.concat([exact, near_rows]).select("seq", "reason", "matched_seq")


def find_contaminated(
    index: pl.DataFrame,
    near: pl.DataFrame,
    eval_splits: list[str],
    by_question: list[str] | tuple[str, ...] = (),
) -> pl.DataFrame:
    """Training samples (split == train) sharing an image with an evaluation split.

    `index` has seq, source, split, img_/tgt_ `key` (exact pixels), `phash` and
    `question_key` columns; `near` is the near-duplicate relation of `dedup.near_pairs`. A
    question of a `by_question` source must also ask what the evaluation sample asks (same
    `question_key`); its other samples, and other sources, match on the image alone.
    Returns (seq, reason, matched_seq) rows; an exact match wins over a near one.
    """
    evals = index.filter(pl.col("split").is_in(eval_splits))
    train = index.filter(pl.col("split") == "train")
    empty = pl.DataFrame(schema={"seq": pl.UInt64, "reason": pl.String, "matched_seq": pl.UInt64})
    if evals.is_empty() or train.is_empty():
        return empty
    # Narrow the training side to samples with an image that is, or neighbours, an eval image.
    eval_keys = _image_column(evals, "key")["key"].unique()
    eval_phashes = _image_column(evals, "phash")["phash"].unique()
    near_eval = near.filter(pl.col("near").is_in(eval_phashes.implode()))["phash"].unique()
    train = train.filter(
        pl.col("img_key").is_in(eval_keys.implode())
        | pl.col("tgt_key").is_in(eval_keys.implode())
        | pl.col("img_phash").is_in(near_eval.implode())
        | pl.col("tgt_phash").is_in(near_eval.implode())
    )
    asked = (
        pl.col("source").cast(pl.String).is_in(list(by_question))
        & pl.col("question_key").is_not_null()
    )
    return pl.concat(
        [
            _matches(train.filter(~asked), evals, near, ()),
            _matches(train.filter(asked), evals, near, ("question_key",)),
        ]
    ).sort("seq")
