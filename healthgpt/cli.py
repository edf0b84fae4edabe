"""Command line: `healthgpt ingest`, `healthgpt sample-sources`.

The Dagster assets call the same library functions, so a step run here and one run from the
UI produce the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from healthgpt.data.decode.deid import SaltError
from healthgpt.data.ingest.run import DEFAULT_MAX_DROP_FRACTION, OutputRefused
from healthgpt.data.sources import SOURCES, LayoutError
from healthgpt.data.sources.registry import RegistryError


def _ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from healthgpt.data.ingest.run import chunk_dir, ingest
    from healthgpt.data.sources.registry import resolve

    # A registered dataset brings its reader and options; a bare reader name reads with the
    # defaults. Options given on the command line override either.
    entry = resolve(args.source)
    given = {"image_size": args.image_size, "language": args.language, "deid_salt": args.salt}
    overrides = {name: value for name, value in given.items() if value is not None}
    if args.all_views:
        overrides["frontal_only"] = False
    if args.burned_in_reviewed:
        overrides["burned_in_reviewed"] = True
    options = replace(entry.options, **overrides, chunk=args.chunk)
    bar = tqdm(desc=f"ingest {args.source}", unit="item", disable=args.quiet, file=sys.stderr)

    def progress(summary) -> None:
        bar.update(summary.items - bar.n)
        bar.set_postfix(records=summary.records, quarantined=summary.quarantined)

    out = chunk_dir(args.out, args.chunk) if args.chunk else args.out
    try:
        summary = ingest(
            args.source,
            args.root,
            out,
            options,
            progress=progress,
            progress_every_s=0.5,
            force=args.force,
            max_drop_fraction=args.max_drop,
            reader_name=entry.reader,
        )
    finally:
        bar.close()
    print(json.dumps(summary.to_json(), sort_keys=True))
    return 0


def _sample_sources(args: argparse.Namespace) -> int:
    from healthgpt.data.samples import build_sample_sources

    built = build_sample_sources(Path(args.dest), args.only or None)
    print(json.dumps({name: str(path) for name, path in built.items()}, sort_keys=True))
    return 0


def _chunk(text: str) -> tuple[int, int]:
    index, _, n_chunks = text.partition("/")
    try:
        chunk = int(index), int(n_chunks)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INDEX/N such as 3/64, got {text!r}") from None
    if not 0 <= chunk[0] < chunk[1]:
        raise argparse.ArgumentTypeError(f"chunk {chunk[0]} does not exist among {chunk[1]}")
    return chunk


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="healthgpt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="read one dataset into Parquet shards")
    ingest.add_argument("source", help="a registered dataset (data_manifests/) or a reader")
    ingest.add_argument("--root", required=True, type=Path, help="the source's official layout")
    ingest.add_argument(
        "--out", required=True, help="output directory, or an object-store URL (s3://...)"
    )
    ingest.add_argument("--image-size", type=int, default=None)
    ingest.add_argument("--language", default=None, choices=["en", "zh", "all"])
    ingest.add_argument("--all-views", action="store_true", help="MIMIC-CXR: keep lateral views")
    ingest.add_argument(
        "--salt",
        default=None,
        help="secret salt for pseudonyms (default: $HEALTHGPT_DEID_SALT, else the public "
        "salt for a bundled sample, else this installation's private salt file)",
    )
    ingest.add_argument(
        "--burned-in-reviewed",
        action="store_true",
        help="DICOM: accept ultrasound, secondary captures and the other classes known to "
        "carry burned-in text, because their pixels were reviewed or cleaned",
    )
    ingest.add_argument(
        "--chunk",
        type=_chunk,
        default=None,
        metavar="INDEX/N",
        help="read only stable chunk INDEX of N (0-based), e.g. 3/64, into <out>/chunk=NNN",
    )
    ingest.add_argument(
        "--force",
        action="store_true",
        help="replace the previous output even when the new build has no records or far fewer",
    )
    ingest.add_argument(
        "--max-drop",
        type=float,
        default=DEFAULT_MAX_DROP_FRACTION,
        metavar="FRACTION",
        help="largest fraction of records a rebuild may lose before it is refused "
        f"(default {DEFAULT_MAX_DROP_FRACTION})",
    )
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(run=_ingest)

    samples = commands.add_parser("sample-sources", help="build the bundled sample sources")
    samples.add_argument("dest", type=Path)
    samples.add_argument("--only", nargs="*", choices=sorted(SOURCES))
    samples.set_defaults(run=_sample_sources)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; bad input (a wrong layout, an unsafe --out, a refused rebuild, an
    unreadable file) ends with one line naming the problem and exit status 2, no traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (LayoutError, OutputRefused, SaltError, OSError, RegistryError) as exc:
        print(f"healthgpt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
