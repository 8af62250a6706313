"""The driver's progress line: in place on a terminal, compact and rate-limited in a log."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

from pipeline import progress
from pipeline.progress import ProgressLog


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_the_first_part_then_one_line_per_interval_and_the_end(caplog, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: now[0]))
    log = ProgressLog(10, stream=io.StringIO(), interval_s=30.0)
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        for t, rows, errors in ((10.0, 2, 1), (31.0, 2, 0), (39.0, 4, 0)):
            now[0] = t
            log.part_done("part-a", rows, errors)  # logged at 10 s; 31 and 39 s: too soon
        now[0] = 40.0
        log.close()  # two parts not shown yet: logged
        log.close()  # nothing new: quiet
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0] == "progress: 2/10 images, 1 error, 0.20 images/s, 10 s elapsed, ETA 40 s"
    assert lines[1] == "progress: 8/10 images, 1 error, 0.20 images/s, 40 s elapsed, ETA 10 s"
    assert "part-a" not in caplog.text  # part names only at debug level


def test_terminal_line_is_rewritten_in_place_and_ended():
    stream = _Terminal()
    log = ProgressLog(None, stream=stream)
    log.part_done("p", 3, 0)
    log.part_done("p", 2, 2)
    log.close()
    text = stream.getvalue()
    assert text.count("\r\x1b[K") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "5/? images, 2 errors," in text and "ETA" not in text  # unknown total: no ETA


def test_durations_read_naturally():
    assert progress._duration(42.4) == "42 s"
    assert progress._duration(185) == "3 min 05 s"
    assert progress._duration(7620) == "2 h 07 min"
