"""Corpus throughput of ``pipeline batch``: episodes and video-hours per hour, 1 vs 2 workers, both engines.

    .venv/bin/python benchmarks/batch_throughput.py [--episodes 4] [--minutes 1] [--configs local:1 local:2 ray:1 ray:2]
        [--device cpu|cuda] [--season 200 --season-minutes 22] [--note "under load"]
        [--shared ../shared] [--workdir /tmp/ramer-batch] [--out benchmarks/results/batch_throughput.md]

Input: ``--episodes`` copies of the ``--minutes`` montage of the shared clips (``benchmarks/long_input.py``:
pieces of every shared clip in a shuffled order, the same people coming back, cuts as in edited TV), in
``--workdir``, never the repository. Each configuration is a fresh process running ``pipeline batch`` into
an empty OUT, so Ray's start-up, every worker's model loading and the corpus outputs all count, as for a
user. While it runs, the resident set size of every worker process (pool workers, Ray actors) and of the
batch process is sampled twice a second (psutil when installed, else /proc).

Columns: ``episodes/hour`` and ``video-hours/hour`` over the whole wall time; ``steady`` leaves out each
worker's first episode (which loads the models) and sums what the workers do side by side:
workers x video seconds / compute seconds of the later episodes (needs two episodes per worker).
``season`` projects ``--season`` episodes of ``--season-minutes`` each: one model load per worker plus the
season's video at the steady rate (assumes the time per video second stays what it is on these episodes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model, write_table  # noqa: E402  (benchmarks/machine.py, beside this script)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.5

log = logging.getLogger("batch_throughput")


# ------------------------------------------------------------------------------------------ memory


def rss_mib(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        pass
    except Exception:  # noqa: BLE001  (psutil.NoSuchProcess and friends: the process is gone)
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def worker_pids(batch: int) -> list[int]:
    """Pool workers below the batch process (spawn_main, not the resource tracker) and every Ray episode actor."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    found = []
    for pid in pids:
        command = _cmdline(pid)
        if "EpisodeActor" in command:
            found.append(pid)
        elif "spawn_main" in command:
            parent = _parent(pid)
            while parent not in (None, 0, 1, batch):
                parent = _parent(parent)
            if parent == batch:
                found.append(pid)
    return found


@dataclass
class MemorySampler:
    batch: int
    workers: dict[int, float] = field(default_factory=dict)   # pid -> peak RSS MiB
    own: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.own = max(self.own, rss_mib(self.batch) or 0.0)
            for pid in worker_pids(self.batch):
                value = rss_mib(pid)
                if value is not None:
                    self.workers[pid] = max(self.workers.get(pid, 0.0), value)
            self.stop.wait(SAMPLE_S)


# ------------------------------------------------------------------------------------------- input


def build_corpus(shared: Path, workdir: Path, episodes: int, minutes: float) -> Path:
    from long_input import build_long_input

    montage = build_long_input(shared / "media", minutes, workdir / "pieces")
    corpus = workdir / f"corpus_{episodes}x{minutes:g}min"
    show = corpus / "Montage"
    show.mkdir(parents=True, exist_ok=True)
    for k in range(1, episodes + 1):
        path = show / f"S01E{k:02d}.mp4"
        if not path.is_file():
            shutil.copyfile(montage, path)
    return corpus


# --------------------------------------------------------------------------------------------- run


def run_config(corpus: Path, out: Path, engine: str, workers: int, device: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "pipeline", "-q", "batch", str(corpus), "-o", str(out), "--engine", engine,
               "--workers", str(workers), "--device", device]
    started = time.perf_counter()
    log = out.parent / f"{out.name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
        sampler = MemorySampler(process.pid)
        thread = threading.Thread(target=sampler.run, daemon=True)
        thread.start()
        code = process.wait()
        sampler.stop.set()
        thread.join()
    wall = time.perf_counter() - started
    index = json.loads((out / "index.json").read_text())
    done = [e for e in index["episodes"] if e["status"] == "done"]
    if code != 0 or len(done) != len(index["episodes"]):
        raise SystemExit(f"{engine}:{workers} failed (exit {code}); see {log}")
    ran = {e["worker"] for e in done}   # the processes that ran episodes (Ray may start others it never uses)
    return {"engine": engine, "workers": workers, "wall": wall, "episodes": done,
            "worker_rss": sorted(v for pid, v in sampler.workers.items() if pid in ran), "batch_rss": sampler.own}


def steady_rate(episodes: list[dict], workers: int) -> tuple[float | None, float | None]:
    """(video seconds per compute second summed over workers, model-load seconds per worker) without firsts."""
    by_worker: dict[int, list[dict]] = {}
    for e in episodes:
        by_worker.setdefault(e.get("worker") or 0, []).append(e)
    firsts, later = [], []
    for items in by_worker.values():
        firsts.append(items[0])   # the index lists episodes in input order; each worker's first finishes first
        later.extend(items[1:])
    if not later:
        return None, None
    per_second = sum(e["seconds"] for e in later) / sum(e["duration"] for e in later)   # compute s per video s
    load = statistics.mean(max(0.0, f["seconds"] - per_second * f["duration"]) for f in firsts)
    return len(by_worker) / per_second, load


def machine_line(device: str) -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpus = "no GPU used"
    if device == "cuda":
        import torch

        gpus = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"{cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {gpus}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=1.0, help="length of each episode")
    parser.add_argument("--configs", nargs="+", default=["local:1", "local:2", "ray:1", "ray:2"],
                        help="ENGINE:WORKERS pairs")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--season", type=int, default=200, help="episodes of the projected season")
    parser.add_argument("--season-minutes", type=float, default=22.0, help="minutes per projected episode")
    parser.add_argument("--note", default="", help="said in the header, e.g. 'under load'")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ramer-batch"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "batch_throughput.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    corpus = build_corpus(args.shared, args.workdir, args.episodes, args.minutes)
    load_start = os.getloadavg()[0]
    results = []
    for config in args.configs:
        engine, _, workers = config.partition(":")
        log.info("running %s with %s worker(s) ...", engine, workers)
        results.append(run_config(corpus, args.workdir / f"out_{engine}_{workers}", engine, int(workers),
                                  args.device))
    load_end = os.getloadavg()[0]

    lines = [f"# pipeline batch throughput{' (' + args.note + ')' if args.note else ''}", "",
             f"Machine: {machine_line(args.device)}; 1-minute load average {load_start:.1f} at start, "
             f"{load_end:.1f} at end.",
             f"Corpus: {args.episodes} episodes of the {args.minutes:g}-minute montage (benchmarks/long_input.py), "
             f"device {args.device}; each row a fresh `pipeline batch` into an empty OUT.",
             f"Command: `.venv/bin/python benchmarks/batch_throughput.py --episodes {args.episodes} "
             f"--minutes {args.minutes:g} --configs {' '.join(args.configs)} --device {args.device}`", "",
             "| engine | workers | episodes | video (s) | wall (s) | episodes/hour | video-hours/hour | "
             "steady video-hours/hour | model load per worker (s) | peak RSS per worker (MiB) | "
             "batch process peak (MiB) | season (h) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        video = sum(e["duration"] for e in r["episodes"])
        rate, load = steady_rate(r["episodes"], r["workers"])
        season = "n/a"
        if rate:
            season = f"{(load + args.season * args.season_minutes * 60 / rate) / 3600:.1f}"
        rss = ", ".join(f"{v:.0f}" for v in r["worker_rss"]) or "n/a"
        lines.append(f"| {r['engine']} | {r['workers']} | {len(r['episodes'])} | {video:.0f} | {r['wall']:.0f} | "
                     f"{len(r['episodes']) / r['wall'] * 3600:.0f} | {video / r['wall']:.2f} | "
                     f"{'n/a' if rate is None else f'{rate:.2f}'} | {'n/a' if load is None else f'{load:.0f}'} | "
                     f"{rss} | {r['batch_rss']:.0f} | {season} |")
    lines += ["", f"season: {args.season} episodes x {args.season_minutes:g} min at the steady rate, plus one model "
              "load per worker; video-hours/hour above 1 means faster than real time."]
    write_table(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
