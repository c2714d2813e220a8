"""run_beside: the audio chain beside the visual pass (at the same time, cores split, stopped when the main fails)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from pipeline.run import run_beside


def test_both_run_at_the_same_time_and_both_results_come_back():
    side_started, main_done = threading.Event(), threading.Event()
    reports = []

    def main():
        # Sequential execution would leave this waiting for a side that has not started.
        assert side_started.wait(timeout=10)
        main_done.set()
        return "visual"

    def side(progress):
        side_started.set()
        progress("asr", 0.5)
        return "audio", main_done.is_set()

    visual, (audio, main_was_done) = run_beside(main, side, lambda stage, f: reports.append((stage, f)), side_threads=1)
    assert visual == "visual" and audio == "audio"
    assert reports == [("asr", 0.5)]


def test_the_cores_are_split_while_both_run_and_restored_after():
    before = torch.get_num_threads()
    seen = {}

    def main():
        seen["main"] = torch.get_num_threads()

    run_beside(main, lambda progress: None, lambda stage, f: None, side_threads=1)
    assert seen["main"] == max(1, (os.cpu_count() or 1) - 1)
    assert torch.get_num_threads() == before


def test_a_main_failure_stops_the_side_at_its_next_report_and_waits_for_it():
    side_state = {"reports": 0, "finished": False}
    started = threading.Event()

    def side(progress):
        started.set()
        try:
            while side_state["reports"] < 10_000:   # a long ASR: stops only when a report raises
                progress("asr", 0.0)
                side_state["reports"] += 1
                time.sleep(0.001)
        finally:
            side_state["finished"] = True
        return "never"

    def main():
        assert started.wait(timeout=10)
        raise ValueError("no faces")

    with pytest.raises(ValueError, match="no faces"):   # the main error, not the side's stop
        run_beside(main, side, lambda stage, f: None, side_threads=1)
    assert side_state["finished"] and side_state["reports"] < 10_000


def test_a_side_failure_reaches_the_caller():
    def side(progress):
        raise OSError("audio unreadable")

    with pytest.raises(OSError, match="audio unreadable"):
        run_beside(lambda: "visual", side, lambda stage, f: None, side_threads=1)
