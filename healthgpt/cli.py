"""Command line: `healthgpt ingest`, `healthgpt sample-sources`, and using a trained model:
`healthgpt ask`, `healthgpt generate`, `healthgpt app`.

The Dagster assets call the same library functions, so a step run here and one run from the
UI produce the same files.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from healthgpt import paths
from healthgpt.data.decode.deid import SaltError
from healthgpt.data.ingest.run import DEFAULT_MAX_DROP_FRACTION, OutputRefused
from healthgpt.data.sources import SOURCES, LayoutError
from healthgpt.data.sources.registry import RegistryError
from healthgpt.serve.inference import MAX_UPLOAD_PIXELS, ServeError
from healthgpt.serve.inference import TASKS as GENERATION_TASKS


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


def _model_choice(args: argparse.Namespace):
    from healthgpt.serve.inference import ModelChoice

    return ModelChoice(
        checkpoint=args.checkpoint,
        official=args.official,
        preset=args.preset,
        base_model=args.base_model,
        vqgan=args.vqgan,
        vqgan_yaml=args.vqgan_yaml,
        vq_dry_run=args.vq_dry_run,
        allow_partial_weights=args.allow_partial_weights,
        stage=args.stage,
        max_new_tokens=args.max_new_tokens,
    )


def _load_inference(args: argparse.Namespace):
    """The model the options name, with a line on stderr saying which and how long it took."""
    from healthgpt.eval.models import VQ_NOTE
    from healthgpt.serve.inference import Inference

    data_dir = args.data_dir or paths.data_dir()
    inference = Inference.load(_model_choice(args), data_dir)
    print(f"loaded {inference.label} in {inference.load_seconds:.1f} s", file=sys.stderr)
    for note in inference.notes:
        if note.startswith(VQ_NOTE):
            print(note, file=sys.stderr)  # the VQGAN file and the sha256 it was loaded with
    return inference


def _ask(args: argparse.Namespace) -> int:
    from healthgpt.serve.inference import read_image_file

    image = read_image_file(args.image)
    print(_load_inference(args).ask(image, args.question))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from healthgpt.serve.inference import read_image_file
    from healthgpt.storage import atomic_write_bytes

    if args.task == "text_to_image" and (args.image or not args.report):
        raise ServeError("text_to_image takes --report TEXT and no image")
    if args.task != "text_to_image" and (args.report or not args.image):
        raise ServeError(f"task {args.task} needs an input IMAGE and no --report")
    if not args.out.parent.is_dir():
        raise ServeError(f"output directory does not exist: {args.out.parent}")
    image = read_image_file(args.image) if args.image else None
    inference = _load_inference(args)
    generated = inference.generate(
        args.task, image, report=args.report, body_part=args.body_part, modality=args.modality
    )
    buffer = io.BytesIO()
    generated.save(buffer, "PNG")
    atomic_write_bytes(args.out, buffer.getvalue())
    print(json.dumps({"out": str(args.out), "width": generated.width, "height": generated.height}))
    return 0


def _app(args: argparse.Namespace) -> int:
    import logging

    from healthgpt.serve.app import LOG, serve
    from healthgpt.serve.inference import startup_line

    started = time.perf_counter()
    inference = _load_inference(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    LOG.info(startup_line(inference, time.perf_counter() - started))
    serve(inference, host=args.host, port=args.port, max_upload_pixels=args.max_upload_pixels)
    return 0


def _serving(run):
    """Run a model command; a `ServeError` becomes one line on stderr and exit status 2."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ServeError as exc:
            print(f"healthgpt {args.command}: error: {exc}", file=sys.stderr)
            return 2

    return wrapped


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (default: the newest stage3 checkpoint)")
    group.add_argument(
        "--checkpoint", default=None, help="a training stage's checkpoint directory or file"
    )
    group.add_argument(
        "--stage", default="stage3", help="without --checkpoint: the newest output of this stage"
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the pipeline wrote checkpoints (default: $HEALTHGPT_DATA_DIR, else ./data)",
    )
    group.add_argument(
        "--official", default=None, metavar="DIR", help="the released HealthGPT weights (*.bin)"
    )
    group.add_argument(
        "--preset", default="", help="model preset (default: the checkpoint's, or m3)"
    )
    group.add_argument("--base-model", default=None, help="--official: base LM name or path")
    group.add_argument(
        "--vqgan",
        default=None,
        help="--official: the VQGAN (taming last.ckpt, or a save_vq .safetensors); its sha256 "
        "is taken now and checked on load",
    )
    group.add_argument("--vqgan-yaml", default=None, help="--vqgan last.ckpt: its model.yaml")
    group.add_argument(
        "--vq-dry-run",
        action="store_true",
        help="let a preset that needs a trained VQGAN (m3, l14) generate with a random one",
    )
    group.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="--official: load files that leave expected tensors unfilled",
    )
    group.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="answer length cap (default: the model's, 1024 for m3/l14 as the official scripts)",
    )


def _chunk(text: str) -> tuple[int, int]:
    index, _, n_chunks = text.partition("/")
    try:
        chunk = int(index), int(n_chunks)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INDEX/N such as 3/64, got {text!r}") from None
    if not 0 <= chunk[0] < chunk[1]:
        raise argparse.ArgumentTypeError(f"chunk {chunk[0]} does not exist among {chunk[1]}")
    return chunk


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


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

    ask = commands.add_parser("ask", help="answer a question about an image")
    ask.add_argument("image", type=Path)
    ask.add_argument("question")
    _model_options(ask)
    ask.set_defaults(run=_serving(_ask))

    generate = commands.add_parser("generate", help="run a generation task into a PNG")
    generate.add_argument("--task", required=True, choices=list(GENERATION_TASKS))
    generate.add_argument("image", type=Path, nargs="?", default=None)
    generate.add_argument("--report", default=None, help="text_to_image: the report text")
    generate.add_argument("--out", type=Path, required=True, help="the PNG to write")
    generate.add_argument("--body-part", default=None, help="as the prompt names it (head...)")
    generate.add_argument(
        "--modality", default="MRI", help="super_resolution: the image's modality"
    )
    _model_options(generate)
    generate.set_defaults(run=_serving(_generate))

    app = commands.add_parser("app", help="the web app: ask about images, generate images")
    app.add_argument("--host", default="127.0.0.1")
    app.add_argument("--port", type=int, default=7860)
    app.add_argument(
        "--max-upload-pixels",
        type=_positive_int,
        default=MAX_UPLOAD_PIXELS,
        help="width x height an uploaded image may declare in its header, checked before it "
        "is decoded (default: 4096 x 4096)",
    )
    _model_options(app)
    app.set_defaults(run=_serving(_app))
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
