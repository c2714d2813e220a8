"""Progress bars appear only on a terminal and never under --quiet."""

from __future__ import annotations

import io
import sys

from pipeline.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_is_drawn_on_a_terminal(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar("training") as advance:
        advance(3, 10)
        advance(10, 10)
    assert "training" in terminal.getvalue() and "10/10" in terminal.getvalue()


def test_quiet_and_pipes_draw_nothing(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar("training", quiet=True) as advance:
        advance(1, 2)
    assert terminal.getvalue() == ""
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    with progress_bar("training") as advance:
        advance(1, 2)
    assert pipe.getvalue() == ""
