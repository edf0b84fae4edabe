"""Progress of long steps: counts, rate and ETA every few seconds, through `logging`.

Every step that can run longer than a few seconds (training the VQ tokenizer, timing steps,
building shards) reports through one `Progress`, so the same lines reach the Dagster run log
(`dagster.yaml` lets Dagster capture the `healthgpt` loggers) and the terminal. On an
interactive terminal a tqdm bar is drawn as well; in a log (Dagster, CI, a pod) only the
throttled lines are written, so a log never fills with bar redraws.

    with Progress("vq_tokenizer", total=300, unit="steps") as progress:
        for step in range(300):
            ...
            progress.update(loss=loss)
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
EVERY_SECONDS = 10.0


def duration(seconds: float) -> str:
    """'42s', '3m05s', '1h02m': short enough for a log line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """A throttled reporter: `update` counts, a line is logged at most every `every` seconds
    (and once at `close`) with count, total, rate, ETA and the latest `fields`."""

    def __init__(
        self,
        what: str,
        total: int | None = None,
        unit: str = "items",
        every: float = EVERY_SECONDS,
        logger: logging.Logger | None = None,
        bar: bool | None = None,
    ) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.logger = logger or log
        self.count = 0
        self.fields: dict[str, Any] = {}
        self.started = self.last = time.perf_counter()
        self.lines = 0
        self._bar = None
        if bar if bar is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit=f" {unit}", leave=False)

    def update(self, n: int = 1, **fields: Any) -> None:
        """Count `n` more; remember `fields` (a loss, a phase) for the next line."""
        self.count += n
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(n)
            if fields:
                self._bar.set_postfix({k: _value(v) for k, v in fields.items()}, refresh=False)
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._emit(now)

    @property
    def rate(self) -> float:
        return self.count / max(time.perf_counter() - self.started, 1e-9)

    def line(self, now: float | None = None, done: bool = False) -> str:
        """The log line for the current state."""
        elapsed = max((now or time.perf_counter()) - self.started, 1e-9)
        rate = self.count / elapsed
        count = f"{self.count}/{self.total}" if self.total else str(self.count)
        parts = [f"{self.what}: {count} {self.unit}"]
        if self.total and not done:
            parts[0] += f" ({self.count / self.total:.0%})"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if done:
            parts.append(f"done in {duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {duration((self.total - self.count) / rate)}")
        parts.extend(f"{key} {_value(value)}" for key, value in self.fields.items())
        return ", ".join(parts)

    def _emit(self, now: float | None = None, done: bool = False) -> None:
        self.lines += 1
        self.logger.info(self.line(now, done))

    def close(self, **fields: Any) -> None:
        """Log the final line (count, rate, total time) and remove the bar."""
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._emit(done=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self.close()
        elif self._bar is not None:
            self._bar.close()


def track(
    items: Iterable[T],
    what: str,
    total: int | None = None,
    unit: str = "items",
    every: float = EVERY_SECONDS,
    logger: logging.Logger | None = None,
) -> Iterator[T]:
    """`items`, reporting progress as they are consumed."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(what, total, unit, every, logger) as progress:
        for item in items:
            yield item
            progress.update()
