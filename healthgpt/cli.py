"""Command line: `healthgpt ingest`, `healthgpt sample-sources`.

The Dagster assets call the same library functions, so a step run here and one run from the
UI produce the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from healthgpt.data.sources import SOURCES, ReaderOptions


def _ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from healthgpt.data.ingest.run import chunk_dir, ingest

    options = ReaderOptions(
        image_size=args.image_size,
        language=args.language,
        frontal_only=not args.all_views,
        deid_salt=args.salt,
        chunk=args.chunk,
    )
    bar = tqdm(desc=f"ingest {args.source}", unit="item", disable=args.quiet, file=sys.stderr)

    def progress(summary) -> None:
        bar.update(summary.items - bar.n)
        bar.set_postfix(records=summary.records, quarantined=summary.quarantined)

    out = chunk_dir(args.out, args.chunk) if args.chunk else args.out
    summary = ingest(args.source, args.root, out, options, progress=progress, progress_every_s=0.5)
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

    ingest = commands.add_parser("ingest", help="read one source into Parquet shards")
    ingest.add_argument("source", choices=sorted(SOURCES))
    ingest.add_argument("--root", required=True, type=Path, help="the source's official layout")
    ingest.add_argument(
        "--out", required=True, help="output directory, or an object-store URL (s3://...)"
    )
    ingest.add_argument("--image-size", type=int, default=256)
    ingest.add_argument("--language", default="en", choices=["en", "zh", "all"])
    ingest.add_argument("--all-views", action="store_true", help="MIMIC-CXR: keep lateral views")
    ingest.add_argument(
        "--salt",
        default=ReaderOptions().deid_salt,
        help="secret salt for pseudonyms (set your own for real data)",
    )
    ingest.add_argument(
        "--chunk",
        type=_chunk,
        default=None,
        metavar="INDEX/N",
        help="read only stable chunk INDEX of N (0-based), e.g. 3/64, into <out>/chunk=NNN",
    )
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(run=_ingest)

    samples = commands.add_parser("sample-sources", help="build the bundled sample sources")
    samples.add_argument("dest", type=Path)
    samples.add_argument("--only", nargs="*", choices=sorted(SOURCES))
    samples.set_defaults(run=_sample_sources)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
