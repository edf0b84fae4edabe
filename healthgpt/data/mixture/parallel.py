"""An ordered process pool for the mixture's CPU-bound step: decoding and hashing images (and
encoding the degraded super-resolution inputs, from the same decode).

The main process streams batches in input order; workers hash the batch's images
while the main process reads and plans the next ones. Results come back in submission order,
so the output does not depend on the number of workers. At most `lookahead` batches are in
flight, which bounds memory. With one worker nothing is spawned: the function runs inline.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

from PIL import Image

from healthgpt.data.mixture.pixels import HashJob, HashResult, hash_image

T = TypeVar("T")


def resolve_workers(workers: int) -> int:
    """`workers`, or for 0 the machine's cores (at most 8)."""
    return workers if workers > 0 else max(1, min(os.cpu_count() or 1, 8))


class OrderedPool:
    """`map` over (context, payload) pairs, yielding (context, fn(payload)) in order."""

    def __init__(self, workers: int) -> None:
        self.workers = resolve_workers(workers)
        self._executor: ProcessPoolExecutor | None = None
        if self.workers > 1:
            # spawn, not fork: the parent holds polars/arrow thread pools that fork would copy.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context)

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def map(
        self, fn: Callable[[Any], T], items: Iterable[tuple[Any, Any]]
    ) -> Iterator[tuple[Any, T]]:
        if self._executor is None:
            for context, payload in items:
                yield context, fn(payload)
            return
        lookahead = self.workers + 1
        queue: deque[tuple[Any, Future]] = deque()
        for context, payload in items:
            queue.append((context, self._executor.submit(fn, payload)))
            if len(queue) > lookahead:
                done, future = queue.popleft()
                yield done, future.result()
        while queue:
            done, future = queue.popleft()
            yield done, future.result()


def hash_many(jobs: list[HashJob]) -> list[HashResult]:
    """Per job: the image's hashes and, for factor > 0, its super-resolution input encoded
    as written and hashed (one decode per image for the whole build)."""
    from healthgpt.data.decode.imaging import encode_png
    from healthgpt.data.mixture.tasks import degraded_image

    results = []
    for data, factor in jobs:
        image = Image.open(io.BytesIO(data))
        image.load()
        if not factor:
            results.append(HashResult(hash_image(image), None))
            continue
        small = degraded_image(image, factor)
        results.append(HashResult(hash_image(image), hash_image(small), encode_png(small, None)))
    return results
