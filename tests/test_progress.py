"""Progress lines for logs: start, at least every interval, end."""

import logging

import numpy as np

from kerasimpl import inference
from kerasimpl.data import ArrayDataset
from kerasimpl.progress import Progress


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_without_a_terminal_a_line_at_least_every_interval(caplog):
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="kerasimpl"):
        p = Progress(1000, "extract train", verbose=2, interval=30, clock=clock)
        for t, done in ((10, 100), (31, 310), (45, 450), (62, 620), (70, 700), (100, 1000)):
            clock.t = t
            p.update(done)
        assert p.close() == 100
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "extract train: start, 1000 img"
    assert lines[1] == "extract train: 310/1000 img, 10.0 img/s, 69 s left"
    assert lines[2] == "extract train: 620/1000 img, 10.0 img/s, 38 s left"
    assert lines[3] == "extract train: done, 1000 img in 100.0 s (10.0 img/s)"
    assert len(lines) == 4


def test_silent_at_verbose_zero_and_no_periodic_lines_beside_a_bar(caplog):
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="kerasimpl"):
        quiet = Progress(10, "x", verbose=0, clock=clock)
        clock.t = 100
        quiet.update(5)
        quiet.close()
        assert not caplog.records
        bar = Progress(10, "y", verbose=1, interval=1, clock=clock)
        clock.t = 200
        bar.update(5)
        bar.close()
    assert [r.getMessage().split(":")[1].split(",")[0].strip() for r in caplog.records] == ["start", "done"]


def test_batch_loop_reports_images_not_batches(caplog):
    x = np.arange(10 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3)
    with caplog.at_level(logging.INFO, logger="kerasimpl"):
        out = inference.run_batches(lambda b: b.reshape(len(b), -1)[:, :2], ArrayDataset(x, None, 4), verbose=2,
                                   workers=2, what="extract val")
    assert out.shape == (10, 2)
    np.testing.assert_array_equal(out, x.reshape(10, -1)[:, :2])  # in order, with prefetching threads
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0] == "extract val: start, 10 img" and msgs[-1].startswith("extract val: done, 10 img in")


def test_batch_loop_returns_freed_memory_every_trim_every_batches(monkeypatch):
    """Long extractions hand freed buffers back to the OS periodically (glibc kept 12 GB of them at full size)."""
    from kerasimpl import runtime

    calls = []
    monkeypatch.setattr(runtime, "release_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(inference, "TRIM_EVERY", 3)
    x = np.zeros((20, 2, 2, 3), np.uint8)
    out = inference.run_batches(lambda b: b.reshape(len(b), -1), ArrayDataset(x, None, 2), verbose=0)
    assert out.shape == (20, 12) and len(calls) == 3  # 10 batches: after the 3rd, 6th and 9th


def test_release_freed_memory_runs_on_this_platform():
    import platform

    from kerasimpl import runtime

    ok = runtime.release_freed_memory()
    assert ok is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert runtime.release_freed_memory() is ok  # the library handle is looked up once and reused
