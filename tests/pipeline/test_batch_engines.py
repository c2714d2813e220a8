"""The local engine's fault isolation with a stand-in runner (no models): retries, crashes, max-failures, exit codes.

The worker processes import this module to build :class:`FakeRunner` (``WorkerSettings.runner_factory``):
each video's name says how its episode behaves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.batch.state import FAILURES_NAME, INDEX_NAME, STAMP_NAME
from pipeline.errors import UserError

FACTORY = f"{Path(__file__).stem}:FakeRunner"


class FakeRunner:
    """Behaves by video name: ok, flaky (OSError on its first attempt), bad (MediaError), bug, crash (os._exit)."""

    def __init__(self, settings):
        self.device = settings.device

    def run(self, video, output, *, cast=None, force=False, progress=None, on_stage_done=None):
        from test_batch_units import person, timeline_document

        from extractors.errors import MediaError
        from pipeline.stage_cache import file_sha256
        from pipeline.timeline import write_timeline

        name, output = Path(video).stem, Path(output)
        output.mkdir(parents=True, exist_ok=True)
        progress("visual", 0.5)
        if name.startswith("crash"):
            os._exit(7)
        if name.startswith("flaky"):
            tries = output.parent / f"{name}.tries"
            count = int(tries.read_text()) if tries.exists() else 0
            tries.write_text(str(count + 1))
            if count == 0:
                raise OSError(5, "Input/output error")
        if name.startswith("bad"):
            raise MediaError(f"{video}: corrupt")
        if name.startswith("bug"):
            raise ZeroDivisionError("division by zero")
        on_stage_done("visual", None)
        document = timeline_document(str(video), [{"id": "C0", "embedding": person(1)}],
                                     [{"character": "C0", "start": 0, "end": 1, "probs": {"joy": 0.5}}],
                                     sha=file_sha256(video))
        write_timeline(document, output / "timeline.json")
        return SimpleNamespace(document=document, seconds=0.01)


def broken_factory(settings):
    raise UserError("checkpoint x does not fit the extractors")


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "in" / "Show"
    root.mkdir(parents=True)
    for k, name in enumerate(("bad", "bug", "crash", "flaky", "ok")):
        (root / f"{name}.mp4").write_bytes(np.random.default_rng(k).bytes(1000))
    return tmp_path / "in"


def failures(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / FAILURES_NAME).read_text().splitlines()]


def statuses(out: Path) -> dict[str, str]:
    return {e["name"]: e["status"] for e in json.loads((out / INDEX_NAME).read_text())["episodes"]}


def run_batch(*args, **kwargs):
    from pipeline.batch import BatchOptions, run_batch

    return run_batch(BatchOptions(*args, **kwargs))


def main(argv: list[str]) -> int:
    from pipeline.cli import main

    return main(argv)


def test_failures_are_isolated_retried_and_recorded(corpus, tmp_path):
    out = tmp_path / "out"
    report = run_batch(corpus, out, workers=1, retries=1, quiet=True, runner_factory=FACTORY)
    assert report.exit_status == 1
    assert statuses(out) == {"bad": "failed", "bug": "failed", "crash": "failed", "flaky": "done", "ok": "done"}
    records = {}
    for record in failures(out):
        records.setdefault(Path(record["path"]).stem, []).append(record)
    assert set(records) == {"bad", "bug", "crash", "flaky"}
    # bad input: one attempt, not retried, the stage it failed in
    [bad] = records["bad"]
    assert (bad["stage"], bad["type"], bad["attempt"], bad["transient"], bad["final"]) == \
        ("visual", "MediaError", 1, False, True)
    assert {"path", "stage", "error", "time", "attempt"} <= set(bad)
    # a bug: not retried, traceback kept
    [bug] = records["bug"]
    assert bug["attempt"] == 1 and bug["final"] and "ZeroDivisionError" in bug["traceback"]
    # a worker crash: retried in a fresh worker, then given up
    assert [(r["stage"], r["attempt"], r["final"]) for r in records["crash"]] == [("worker", 1, False), ("worker", 2, True)]
    # a transient error: retried, then fine
    assert [(r["type"], r["attempt"], r["final"]) for r in records["flaky"]] == [("OSError", 1, False)]
    assert (out / "Show" / "flaky" / STAMP_NAME).is_file()
    assert (out / "Show" / "identities.json").is_file() and (out / "Show" / "characters.csv").is_file()

    # the rerun retries only what may succeed now: the crash (transient), not the corrupt file nor the bug
    os.rename(corpus / "Show" / "crash.mp4", tmp_path / "crash.mp4")   # gone now: a bad row is not the point here
    report = run_batch(corpus, out, workers=1, retries=1, quiet=True, runner_factory=FACTORY)
    assert statuses(out) == {"bad": "failed-before", "bug": "failed-before", "flaky": "reused", "ok": "reused"}
    assert report.exit_status == 1 and len(failures(out)) == 5


def test_max_failures_stops_the_batch(corpus, tmp_path):
    out = tmp_path / "out"
    report = run_batch(corpus, out, workers=1, max_failures=1, retries=0, quiet=True,
                         runner_factory=FACTORY)
    assert report.exit_status == 1
    assert statuses(out) == {"bad": "failed", "bug": "not-run", "crash": "not-run", "flaky": "not-run",
                             "ok": "not-run"}


def test_a_worker_that_cannot_start_stops_the_batch(corpus, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="does not fit"):
        run_batch(corpus, out, workers=1, quiet=True, runner_factory=f"{Path(__file__).stem}:broken_factory")
    assert set(statuses(out).values()) == {"not-run"}
    assert not (out / FAILURES_NAME).exists()


def run_cli(*args) -> int:
    return main(["-q", "batch", *map(str, args)])


def test_bad_arguments_exit_2(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\nin/Show/ok.mp4\nin/Show/nope.mp4\n")
    cases = [((tmp_path / "missing", "-o", out), "does not exist"),
             ((manifest, "-o", out), "m.csv:3: in/Show/nope.mp4 does not exist"),
             ((corpus, "-o", out, "--workers", "0"), "--workers must be at least 1"),
             ((corpus, "-o", out, "--ray-address", "auto"), "--ray-address needs --engine ray"),
             ((corpus, "-o", out, "--cast", tmp_path / "cast.yaml"), "cast file"),
             ((corpus, "-o", out, "--checkpoint", tmp_path / "nope"), "is not a folder")]
    for args, phrase in cases:
        assert run_cli(*args) == 2, args
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err, err
    assert not out.exists(), "refused input leaves no output folder"


def test_help_documents_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    text = capsys.readouterr().out
    assert "exit status" in text and "1    some episodes failed" in text and "--engine {local,ray}" in text
