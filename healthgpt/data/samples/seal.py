"""The marker of a bundled sample: every builder's `build` is wrapped by `sealed`, which lists
in `SAMPLE_README.txt` the hash of each file the build wrote (`deid.seal_sample`). Only a root
whose files all match that list gets the public salt (`deid.not_a_sample`)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

from healthgpt.data.decode.deid import seal_sample


def sealed(build: Callable[[Path], None]) -> Callable[[Path], None]:
    """`build`, then the hashes of the files it created or rewrote appended to its marker.
    Files already under `dest` that the build left alone are not listed."""

    @functools.wraps(build)
    def wrapper(dest: Path) -> None:
        dest = Path(dest)
        before = _stamps(dest)
        build(dest)
        after = _stamps(dest)
        seal_sample(dest, [path for path, stamp in after.items() if before.get(path) != stamp])

    return wrapper


def _stamps(root: Path) -> dict[Path, tuple[int, int, int]]:
    stamps = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                info = path.stat()
                stamps[path] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return stamps
