"""Whole-pipeline time over video duration, time per stage and peak memory of ``pipeline run``.

    .venv/bin/python benchmarks/pipeline_run.py [--minutes 0 10 60] [--runs 3] [--device cpu|cuda]
        [--audio beside after] [--shared ../shared] [--workdir /tmp/ramer-pipeline]
        [--out benchmarks/results/pipeline_run.md]

Inputs: ``visualvoice_interview.mp4`` itself (``0`` = the 17.5 s clip), and 10 and 60 minutes of the
``--input`` kind of benchmarks/long_input.py (``montage``, the default: pieces of the shared clips in a
shuffled order; ``repeat``: the interview end to end, which trips Whisper's repetition guard), written into
``--workdir``, never the repository. Every run is a fresh process running ``pipeline run --force`` with the
default checkpoint, which reports its own peak resident set size (``ru_maxrss``), so model loading, imports
and every stage count, as for a user; this script samples its anonymous part (``RssAnon``) from outside,
which does not vary with the page cache as the mapped files do. The child also samples its resident set
size every 0.25 s and reports the peak while each stage ran (the samples are left in ``rss_trace.json`` of
the run's output folder in ``--workdir``). The interview gets ``--runs`` runs (median quoted); longer inputs run once each (say so
beside the numbers). Targets (issue 10): at most 0.5 x the video's duration on two cores; peak memory flat
in length, under 3 GB at 60 minutes.

``--against CHECKOUT`` runs the same inputs with another checkout's code as well (its rows are labelled
with its commit), alternating run by run, for a before/after comparison in one run.

``--audio``: ``beside`` is the default configuration (VAD, ASR and acoustic features in a second thread
while the visual pass runs, ``parallel_audio: true``, and then that thread measures the mouths of the speech
windows the visual pass has settled, ``mouths_beside: true``); ``mouths-after`` measures the mouths only after
the visual pass (``mouths_beside: false``); ``after`` runs every stage one after the other.
Given both, the two alternate run by run on each input, so they are compared side by side in one run.
In ``beside`` runs the per-stage seconds of visual and of the audio chain overlap in time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import build_input, machine  # noqa: E402  (benchmarks/memory.py, beside this script)

CLIP = "visualvoice_interview.mp4"
STAGES = ("visual", "vad", "asr", "acoustic", "mouths", "diarization", "speaking", "text", "scoring")


class RssTrace:
    """Samples this process's resident set size every ``period`` s; :meth:`peaks` gives, per stage, the most
    seen while that stage ran (from its start to its ``on_stage_done``; stages running at the same time share
    their samples), and under ``other`` the most seen while no stage ran (imports, model loading, the
    timeline document and thumbnails)."""

    def __init__(self, period: float = 0.25):
        self.period = period
        self.samples: list[tuple[float, float]] = []       # (perf_counter, MB)
        self.intervals: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def stage_done(self, stage: str, record) -> None:
        end = time.perf_counter()
        self.intervals[stage] = (end - record.seconds, end)

    def peaks(self) -> dict[str, float]:
        result: dict[str, float] = {}
        for t, mb in self.samples:
            inside = [s for s, (a, b) in self.intervals.items() if a <= t <= b] or ["other"]
            for stage in inside:
                result[stage] = max(result.get(stage, 0.0), mb)
        return result

    def save(self, path: Path) -> None:
        """The samples and the stages' intervals, in seconds from the first sample (to plot or read)."""
        t0 = self.samples[0][0] if self.samples else 0.0
        path.write_text(json.dumps({
            "samples": [[round(t - t0, 2), round(mb, 1)] for t, mb in self.samples],
            "stages": {s: [round(a - t0, 2), round(b - t0, 2)] for s, (a, b) in self.intervals.items()}}))

    def _sample(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append((time.perf_counter(), _rss_mb()))

    def __enter__(self) -> RssTrace:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(video: Path, out: Path, device: str, audio: str) -> int:
    from pipeline.config import PipelineConfig
    from pipeline.run import PipelineRunner

    start = time.perf_counter()
    config = PipelineConfig(parallel_audio=audio != "after", mouths_beside=audio == "beside")
    with RssTrace() as trace:
        result = PipelineRunner(config, device=device).run(video, out, force=True,
                                                             on_stage_done=trace.stage_done)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trace.save(out / "rss_trace.json")
    print(json.dumps({"seconds": seconds, "duration": result.document["video"]["duration"],
                      "peak_mb": peak_kb / 1024,
                      "stages": {k: v.seconds for k, v in result.stages.items()},
                      "stage_peak_mb": trace.peaks(),
                      "characters": len(result.document["characters"]),
                      "segments": len(result.document["segments"])}))
    return 0


def _peak_anonymous_mb(pid: int, finished: threading.Event, peak: list[float], period: float = 0.25) -> None:
    """The most anonymous memory (``RssAnon``: heap, stacks, tensors) seen in process ``pid``, sampled from
    outside, so a checkout's script without the sampler is measured alike. The resident set also counts the
    mapped pages of libraries and model files, which vary by 100 MB between identical runs with the state of
    the page cache; the anonymous part is what the run itself allocates."""
    status = Path(f"/proc/{pid}/status")
    while not finished.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]) / 1024)
        except OSError:
            return
        finished.wait(period)


def run_once(video: Path, out: Path, device: str, audio: str, script: Path = Path(__file__)) -> dict:
    child_process = subprocess.Popen([sys.executable, str(script), "--child", str(video), str(out), "--device",
                                      device, "--audio", audio],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finished, peak_anonymous = threading.Event(), [0.0]
    sampler = threading.Thread(target=_peak_anonymous_mb, args=(child_process.pid, finished, peak_anonymous),
                               daemon=True)
    sampler.start()
    stdout, stderr = child_process.communicate()
    finished.set()
    sampler.join()
    if child_process.returncode != 0:
        raise SystemExit(f"pipeline run failed on {video}:\n{stderr[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_anonymous_mb": peak_anonymous[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[0, 10, 60])
    parser.add_argument("--runs", type=int, default=3, help="runs of the interview clip (longer inputs: 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ramer-pipeline"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "pipeline_run.md")
    parser.add_argument("--input", choices=("montage", "repeat"), default="montage")
    parser.add_argument("--audio", nargs="+", choices=("beside", "mouths-after", "after"), default=["beside"],
                        help="audio stages and then the mouth measurement beside the visual pass (the default), "
                             "the audio stages only (mouths after the visual pass), or every stage after it; "
                             "several: alternate, compared")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="another checkout of the project (e.g. `git worktree add /tmp/before COMMIT`): each "
                             "run alternates with the same run of that checkout's code, compared side by side")
    parser.add_argument("--child", nargs=2, metavar=("VIDEO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(Path(args.child[0]), Path(args.child[1]), args.device, args.audio[0])

    clip = args.shared / "media" / CLIP
    header = machine()
    rows, per_stage, per_stage_memory = [], [], []
    for minutes in args.minutes:
        video = clip if minutes == 0 else build_input(args.shared / "media", minutes, args.workdir, args.input)
        variants = [(mode, mode, Path(__file__)) for mode in args.audio]
        if args.against:
            commit = subprocess.run(["git", "-C", str(args.against), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True, check=False).stdout.strip() or args.against.name
            variants += [(f"{mode} @ {commit}", mode, args.against / "benchmarks" / Path(__file__).name)
                         for mode in args.audio]
        by_mode: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
        for _ in range(args.runs if minutes == 0 else 1):
            for label, mode, script in variants:   # alternating, so a drift in the machine's speed hits all alike
                by_mode[label].append(run_once(video, args.workdir / f"out_{minutes:g}", args.device, mode, script))
        for mode, runs in by_mode.items():
            seconds = statistics.median(r["seconds"] for r in runs)
            duration = runs[0]["duration"]
            peak = max(r["peak_mb"] for r in runs)
            peak_anonymous = max(r["peak_anonymous_mb"] for r in runs)
            label = f"{CLIP} ({duration:.1f} s)" if minutes == 0 else f"{minutes:g} min {args.input} ({duration:.0f} s)"
            rows.append(f"| {label} | {mode} | {len(runs)} | {seconds:.1f} | {seconds / duration:.3f} | "
                        f"{peak / 1024:.2f} | {peak_anonymous / 1024:.2f} | {runs[0]['characters']} | {runs[0]['segments']} |")
            stage_seconds = {s: statistics.median(r["stages"].get(s, 0.0) for r in runs) for s in STAGES}
            per_stage.append(f"| {label} | {mode} | "
                             + " | ".join(f"{stage_seconds[s] / duration:.3f}" for s in STAGES) + " |")
            stage_peak = {s: max(r.get("stage_peak_mb", {}).get(s, 0.0) for r in runs) for s in (*STAGES, "other")}
            per_stage_memory.append(f"| {label} | {mode} | " + " | ".join(   # -: no sample (shorter than 0.25 s,
                f"{stage_peak[s] / 1024:.2f}" if stage_peak[s] else "-" for s in (*STAGES, "other")) + " |")  # or untraced
            print(rows[-1], flush=True)
    load_end = os.getloadavg()[0]
    text = "\n".join([
        "# `pipeline run`: time over duration and peak memory",
        "",
        f"Machine: {header}; at the end {load_end:.1f}. Device: {args.device}. Command: "
        f"`.venv/bin/python benchmarks/pipeline_run.py --minutes {' '.join(f'{m:g}' for m in args.minutes)} "
        f"--runs {args.runs} --device {args.device} --input {args.input} --audio {' '.join(args.audio)}"
        + (f" --against {args.against}" if args.against else "")
        + "`. Default configuration and checkpoint, `--force` (no cache).",
        "",
        "| input | audio stages | runs | seconds (median) | x duration | peak RSS GiB | peak anonymous GiB | "
        "characters | segments |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Seconds per stage over the video's duration (median of the runs; with the audio stages beside the "
        "visual pass, visual and vad + asr + acoustic overlap in time):",
        "",
        "| input | audio stages | " + " | ".join(STAGES) + " |",
        "|---|---|" + "---|" * len(STAGES),
        *per_stage,
        "",
        "Peak resident set size (GiB) while each stage ran, sampled every 0.25 s (stages running at the same "
        "time share their samples; `other`: no stage running, i.e. imports, model loading, the document and "
        "thumbnails):",
        "",
        "| input | audio stages | " + " | ".join((*STAGES, "other")) + " |",
        "|---|---|" + "---|" * (len(STAGES) + 1),
        *per_stage_memory,
        "",
        "Targets: at most 0.5 x duration on two cores; peak memory flat in length and under 3 GB at 60 minutes.",
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
