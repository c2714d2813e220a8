"""``pipeline batch`` on real clips with both engines: a corrupt file among them, a SIGKILL and restart, a
rerun that recomputes nothing, and the same person found in two episodes.

The corpus: three 2.5 s cuts (two from ``retalking_face1``, one from ``retalking_face2``: another person)
and a file of random bytes named like a video. Running the pipeline costs most of a minute per fresh worker
(model loading), so one module fixture runs the local engine twice (killed, then restarted) and the Ray
engine starts from a copy of those episodes' stage caches (its actor runs every episode through the
PipelineRunner, the stages come from the cache).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.batch.state import FAILURES_NAME, INDEX_NAME, STAMP_NAME
from pipeline.run import STAGE_FOLDER, TIMELINE_NAME
from pipeline.timeline import read_timeline
from tests.conftest import REPO_ROOT

EPISODES = ("S01E01", "S01E02", "S01E03")
CORRUPT = "S01E04"
CUT_S = 2.5
KILL_WAIT_S = 600


@pytest.fixture(scope="module")
def corpus(media_dir, face1, tmp_path_factory) -> Path:
    import av_clips

    from extractors.audio import SAMPLE_RATE

    face2 = av_clips.load_source(media_dir / "retalking_face2.mp4")
    show = tmp_path_factory.mktemp("corpus") / "Show"
    show.mkdir()
    cuts = {"S01E01": (face1, 0.0), "S01E02": (face1, 3.0), "S01E03": (face2, 0.0)}   # E01, E02: one person
    for name, (source, start) in cuts.items():
        first = int(start * av_clips.FPS)
        frames = list(source.frames[first: first + int(CUT_S * av_clips.FPS)])
        audio = source.audio[int(start * SAMPLE_RATE): int((start + CUT_S) * SAMPLE_RATE)]
        av_clips.write_clip(show / f"{name}.mp4", frames, audio)
    (show / f"{CORRUPT}.mp4").write_bytes(os.urandom(40_000))
    return show.parent


def batch_command(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "-q", "batch", str(corpus), "-o", str(out), "--workers", "1", *extra]


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and p.name != INDEX_NAME and p.parent != out / "Show"}


def statuses(out: Path) -> dict[str, str]:
    return {e["name"]: e["status"] for e in json.loads((out / INDEX_NAME).read_text())["episodes"]}


def failures(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / FAILURES_NAME).read_text().splitlines()]


@pytest.fixture(scope="module")
def local_runs(corpus, tmp_path_factory) -> dict:
    """A batch SIGKILLed once the first timeline exists, then restarted (both through the CLI)."""
    out = tmp_path_factory.mktemp("batch") / "out"
    logs = out.parent / "killed.log"
    first = out / "Show" / EPISODES[0] / TIMELINE_NAME
    started = time.monotonic()
    with logs.open("w") as log:
        process = subprocess.Popen(batch_command(corpus, out), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        while not first.exists() and process.poll() is None and time.monotonic() - started < KILL_WAIT_S:
            time.sleep(0.05)
        assert process.poll() is None, f"the batch ended before it could be killed: {logs.read_text()[-2000:]}"
        workers = children_of(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_at = time.monotonic()
    while any(alive(w) for w in workers) and time.monotonic() - killed_at < 10:
        time.sleep(0.1)
    at_kill = {"timelines": {p.parent.name: p.stat().st_mtime_ns for p in out.rglob(TIMELINE_NAME)},
               "workers_alive": [w for w in workers if alive(w)], "workers": workers}
    for path in out.rglob(TIMELINE_NAME):   # what a kill leaves is whole: every timeline there validates
        read_timeline(path)
    restarted = subprocess.run(batch_command(corpus, out), cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=900, check=False)
    return {"out": out, "at_kill": at_kill, "restart": restarted}


def test_killed_run_restarts_without_redoing_finished_episodes(local_runs):
    out, at_kill, restart = local_runs["out"], local_runs["at_kill"], local_runs["restart"]
    assert at_kill["workers"], "the batch ran its episodes in a worker process"
    assert not at_kill["workers_alive"], "workers exit when the batch process is killed"
    assert EPISODES[0] in at_kill["timelines"] and len(at_kill["timelines"]) < len(EPISODES)
    assert restart.returncode == 1, restart.stderr[-3000:]
    status = statuses(out)
    for name, mtime in at_kill["timelines"].items():
        assert status[name] == "reused"
        assert (out / "Show" / name / TIMELINE_NAME).stat().st_mtime_ns == mtime, f"{name} was redone"
    assert "done" in status.values()
    leftovers = [p for p in out.rglob(".*") if p.is_file() and p.name.endswith(".tmp")]
    assert not leftovers, leftovers


def test_three_timelines_and_one_recorded_failure(local_runs, corpus):
    out = local_runs["out"]
    for name in EPISODES:
        document = read_timeline(out / "Show" / name / TIMELINE_NAME)
        assert document["video"]["path"] == str(corpus / "Show" / f"{name}.mp4")
        assert document["characters"] and (out / "Show" / name / STAMP_NAME).is_file()
    assert not (out / "Show" / CORRUPT).exists()
    [failure] = failures(out)
    assert failure["path"] == str(corpus / "Show" / f"{CORRUPT}.mp4")
    assert (failure["stage"], failure["attempt"], failure["final"], failure["transient"]) == ("input", 1, True, False)
    assert "cannot be read as media" in failure["error"] and failure["time"]
    index = json.loads((out / INDEX_NAME).read_text())
    by_name = {e["name"]: e for e in index["episodes"]}
    assert by_name[CORRUPT]["status"] == "failed" and by_name[CORRUPT]["stage"] == "input"
    assert all(by_name[n]["duration"] == pytest.approx(CUT_S, abs=0.1) for n in EPISODES)
    assert by_name["S01E01"]["timeline"] == f"Show/S01E01/{TIMELINE_NAME}"


def test_second_run_recomputes_nothing(local_runs, corpus):
    from pipeline.batch import BatchOptions, run_batch

    out = local_runs["out"]
    before = mtimes(out)
    report = run_batch(BatchOptions(corpus, out, workers=1, quiet=True))
    assert report.exit_status == 1
    assert statuses(out) == {**{n: "reused" for n in EPISODES}, CORRUPT: "failed-before"}
    assert mtimes(out) == before, "no episode file (timeline, stamp, stage cache, thumbnail) was rewritten"
    assert len(failures(out)) == 1


def test_same_person_across_episodes_is_one_identity(local_runs):
    out = local_runs["out"]
    identities = json.loads((out / "Show" / "identities.json").read_text())
    for name in EPISODES:
        assert len(read_timeline(out / "Show" / name / TIMELINE_NAME)["characters"]) == 1, name
    [person] = identities["identities"]
    assert [(m["episode"], m["character"]) for m in person["members"]] == [("S01E01", "C0"), ("S01E02", "C0")]
    assert [(c["episode"], c["reason"]) for c in identities["episode_local"]] == [("S01E03", "seen in one episode")]
    rows = (out / "Show" / "characters.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in rows[1:]] == ["P0", "P0", "S01E03/C0"]
    assert (out / "Show" / "emotion_mix.png").read_bytes()[:4] == b"\x89PNG"


def test_ray_engine(local_runs, corpus, tmp_path_factory):
    ray = pytest.importorskip("ray")
    from pipeline.batch import BatchOptions, run_batch

    out = tmp_path_factory.mktemp("ray") / "out"
    for name in EPISODES:   # the local run's stage caches: the actor's runner reuses every stage
        shutil.copytree(local_runs["out"] / "Show" / name / STAGE_FOLDER, out / "Show" / name / STAGE_FOLDER)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="WARNING")
    try:
        report = run_batch(BatchOptions(corpus, out, engine="ray", workers=1, quiet=True))
    finally:
        ray.shutdown()
    assert report.exit_status == 1
    assert statuses(out) == {**{n: "done" for n in EPISODES}, CORRUPT: "failed"}
    for name in EPISODES:
        document = read_timeline(out / "Show" / name / TIMELINE_NAME)
        assert all(stage["cached"] for stage in document["provenance"]["stages"].values())
    [failure] = failures(out)
    assert failure["stage"] == "input" and failure["path"].endswith(f"{CORRUPT}.mp4")
    assert len(json.loads((out / "Show" / "identities.json").read_text())["identities"]) == 1
    before = mtimes(out)
    again = run_batch(BatchOptions(corpus, out, engine="ray", workers=1, quiet=True))   # nothing to do: no Ray
    assert again.exit_status == 1 and mtimes(out) == before
    assert statuses(out) == {**{n: "reused" for n in EPISODES}, CORRUPT: "failed-before"}
