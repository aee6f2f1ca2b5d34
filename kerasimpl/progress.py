"""Progress of long loops (feature extraction, evaluation) for terminals and logs.

On a terminal Keras' progress bar redraws in place. Written to a file or a
pipe that bar prints nothing until the loop ends, so a log shows nothing
for minutes. `Progress` therefore logs, through the `kerasimpl` logger
(the library never prints), one line when a stage starts and one when it
ends, and without a bar (`verbose=2`, what the experiments use when output
is not a terminal) one at least every `interval` seconds: done/total,
items/s, time left. The experiments route that logger to standard output.
"""

from __future__ import annotations

import logging
import time

import keras

logger = logging.getLogger("kerasimpl")


class Progress:
    """Track `total` items of stage `what`.

    Args:
        total: items to process.
        what: stage name for the log lines, e.g. `"extract train"`.
        verbose: Keras-style: 0 silent, 1 (or "auto") bar, 2 log lines only.
        interval: seconds between log lines.
        unit: item name, e.g. `"img"`.
        clock: time source (tests pass a fake one).
    """

    def __init__(self, total, what, verbose="auto", interval=30.0, unit="img", clock=time.monotonic):
        self.total, self.what, self.unit, self.interval, self.clock = int(total), what, unit, float(interval), clock
        self.quiet = verbose == 0
        self.bar = keras.utils.Progbar(self.total, verbose=1, unit_name=unit) if verbose in (1, "auto") else None
        self.start = self.last = clock()
        if not self.quiet:
            logger.info("%s: start, %d %s", what, self.total, unit)

    def update(self, done):
        """`done` items are finished."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(done)
        now = self.clock()
        if self.bar is None and now - self.last >= self.interval and done < self.total:
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            left = (self.total - done) / rate if rate > 0 else float("inf")
            logger.info("%s: %d/%d %s, %.1f %s/s, %.0f s left", self.what, done, self.total, self.unit, rate,
                        self.unit, left)

    def close(self):
        """Log the end of the stage; returns its seconds."""
        seconds = self.clock() - self.start
        if not self.quiet:
            logger.info("%s: done, %d %s in %.1f s (%.1f %s/s)", self.what, self.total, self.unit, seconds,
                        self.total / max(seconds, 1e-9), self.unit)
        return seconds


class ProgressCallback(keras.callbacks.Callback):
    """`Progress` for `model.predict` (images counted from batch sizes)."""

    def __init__(self, progress, batch_size):
        super().__init__()
        self.progress, self.batch_size = progress, int(batch_size)

    def on_predict_batch_end(self, batch, logs=None):
        self.progress.update(min((batch + 1) * self.batch_size, self.progress.total))
