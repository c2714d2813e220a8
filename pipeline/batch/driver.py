"""``pipeline batch``: plans the episodes, skips the finished, runs the rest on an engine, writes the corpus.

The batch process itself never loads a model: it reads the input, checks which episodes are finished
(:func:`pipeline.batch.state.finished_timeline`), hands the others to an engine (local process pool or
Ray), records every outcome as it arrives (``OUT/index.json`` rewritten whole, ``OUT/failures.jsonl``
appended), and at the end rebuilds each show's corpus outputs from the timelines on disk. A rerun of a
finished batch therefore starts no worker at all.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.batch.inputs import Episode, episode_order, read_input
from pipeline.batch.state import (
    INDEX_NAME,
    BatchLock,
    FailureLog,
    FileStat,
    failed_for_good,
    finished_timeline,
    remove_leftovers,
    settings_digest,
    write_json,
)
from pipeline.batch.worker import EpisodeJob, EpisodeOutcome, WorkerSettings
from pipeline.errors import UserError
from pipeline.progress import progress_bar
from pipeline.run import TIMELINE_NAME

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
# Index statuses. done: computed by this run; reused: finished before, skipped; failed: failed in this run;
# failed-before: failed for good in an earlier run on the same file and settings, not retried;
# not-run: left when the batch stopped early (--max-failures, an interrupt).
DONE, REUSED, FAILED, FAILED_BEFORE, NOT_RUN, PENDING = "done", "reused", "failed", "failed-before", "not-run", "pending"
OK_STATUSES = (DONE, REUSED)


@dataclass
class BatchOptions:
    input: Path
    output: Path
    workers: int | None = None         # None: one per GPU, else 1
    engine: str = "local"
    ray_address: str | None = None
    max_failures: int | None = None
    retries: int = 2                   # further attempts after a transient failure
    config: Path | None = None
    checkpoint: Path | None = None
    device: str | None = None
    cast: Path | None = None
    force: bool = False
    retry_failed: bool = False
    quiet: bool = False
    runner_factory: str | None = None  # see WorkerSettings.runner_factory (not on the command line)


@dataclass
class EpisodeState:
    episode: Episode
    folder: Path
    settings: str
    status: str = PENDING
    duration: float | None = None
    characters: int | None = None
    seconds: float | None = None
    attempts: int = 0
    stage: str | None = None
    error: str | None = None
    worker: int | None = None          # pid of the process that ran it (the benchmark groups by worker)

    def to_dict(self, out: Path) -> dict:
        e = self.episode
        timeline = self.folder / TIMELINE_NAME
        return {"show": e.show, "name": e.name, "season": e.season, "episode": e.episode, "video": str(e.video),
                "cast": str(e.cast) if e.cast else None, "output": str(self.folder.relative_to(out)),
                "timeline": str(timeline.relative_to(out)) if self.status in OK_STATUSES else None,
                "status": self.status, "duration": self.duration, "characters": self.characters,
                "seconds": None if self.seconds is None else round(self.seconds, 3), "attempts": self.attempts,
                "stage": self.stage, "error": self.error, "worker": self.worker}


@dataclass
class BatchReport:
    out: Path
    states: list[EpisodeState]
    engine: str
    summaries: dict = field(default_factory=dict)   # show -> list[EpisodeSummary]

    def count(self, *statuses: str) -> int:
        return sum(1 for s in self.states if s.status in statuses)

    @property
    def exit_status(self) -> int:
        return 0 if self.count(*OK_STATUSES) == len(self.states) else 1

    def summary(self) -> str:
        hours = sum(s.duration or 0.0 for s in self.states if s.status in OK_STATUSES) / 3600
        return (f"{self.out}: {self.count(DONE)} episodes computed, {self.count(REUSED)} reused, "
                f"{self.count(FAILED, FAILED_BEFORE)} failed, {self.count(NOT_RUN, PENDING)} not run "
                f"({hours:.2f} video-hours finished); failures in {FailureLog(self.out).path.name}")


class BatchRun:
    """One ``pipeline batch`` invocation."""

    def __init__(self, options: BatchOptions):
        self.options = options
        self.out = options.output.resolve()
        self.failures = FailureLog(self.out)
        self.states: dict[str, EpisodeState] = {}
        self.final_failures = 0
        self.fatal: str | None = None
        self._advance = None
        self._finished = 0

    # -------------------------------------------------------------------------------- checks

    def check_options(self) -> None:
        o = self.options
        if o.engine not in ENGINES:
            raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {o.engine!r}")
        if o.workers is not None and o.workers < 1:
            raise UserError(f"--workers must be at least 1, got {o.workers}")
        if o.retries < 0:
            raise UserError(f"--retries must be 0 or more, got {o.retries}")
        if o.max_failures is not None and o.max_failures < 1:
            raise UserError(f"--max-failures must be at least 1, got {o.max_failures}")
        if o.ray_address and o.engine != "ray":
            raise UserError("--ray-address needs --engine ray")
        if o.checkpoint is not None and not o.checkpoint.is_dir():
            raise UserError(f"checkpoint {o.checkpoint} is not a folder; give a folder saved by `pipeline train`")
        if o.cast is not None and not o.cast.is_file():
            raise UserError(f"cast file {o.cast} not found")

    # ---------------------------------------------------------------------------------- plan

    def plan(self) -> list[EpisodeState]:
        from extractors.identity import read_cast_file
        from pipeline.config import load_config
        from pipeline.run import check_output
        from pipeline.stage_cache import file_sha256

        o = self.options
        config = load_config(o.config).model_dump(mode="json")
        episodes = read_input(o.input, o.cast.resolve() if o.cast else None, exclude=self.out)
        cast_digests: dict[Path, str] = {}
        for cast in {e.cast for e in episodes if e.cast is not None}:
            read_cast_file(cast)   # a bad cast file is bad input: refused before anything runs
            cast_digests[cast] = file_sha256(cast)
        check_output(self.out)     # only now: refused input leaves no OUT behind
        checkpoint = str(o.checkpoint.resolve()) if o.checkpoint else None
        states = []
        for episode in episodes:
            digest = settings_digest(config, checkpoint, cast_digests.get(episode.cast) if episode.cast else None)
            state = EpisodeState(episode, self.out / episode.show / episode.name, digest)
            states.append(state)
            self.states[episode.key] = state
        return states

    def triage(self, states: list[EpisodeState]) -> dict[str, list]:
        """Marks the finished and the failed-for-good; returns the finished episodes' summaries by show."""
        from pipeline.batch.corpus import summarize

        o = self.options
        last_failure = self.failures.last_by_video()
        summaries: dict[str, list] = {}
        for state in states:
            e = state.episode
            if o.force:
                continue
            document = finished_timeline(state.folder, e.video, state.settings)
            if document is not None:
                state.status, state.duration = REUSED, float(document["video"]["duration"])
                state.characters = len(document["characters"])
                summaries.setdefault(e.show, []).append(summarize(e, document))
                continue
            record = last_failure.get(str(e.video))
            if not o.retry_failed and failed_for_good(record, e.video, state.settings):
                state.status, state.stage, state.error = FAILED_BEFORE, record.get("stage"), record.get("error")
                state.attempts = int(record.get("attempt") or 0)
        return summaries

    # ----------------------------------------------------------------------------------- run

    def engine(self, todo: int):
        from pipeline.batch.local import LocalEngine, visible_gpus

        o = self.options
        cores = os.cpu_count() or 1
        gpus = visible_gpus(o.device) if o.engine == "local" else []
        if o.engine == "local" and o.device == "cuda" and not gpus:
            raise UserError("--device cuda, but torch sees no GPU here (see `python -m pipeline doctor`)")
        workers = o.workers or max(1, len(gpus))
        workers = min(workers, todo)   # no idle worker loading models for nothing
        settings = WorkerSettings(config=o.config.resolve() if o.config else None,
                                  checkpoint=o.checkpoint.resolve() if o.checkpoint else None,
                                  device="cuda" if gpus else o.device, threads=max(1, cores // workers),
                                  max_attempts=o.retries + 1, force=o.force, runner_factory=o.runner_factory)
        if o.engine == "ray":
            from pipeline.batch.ray_engine import RayEngine, import_ray

            import_ray()   # a missing Ray is a one-line error before anything starts
            return RayEngine(settings, workers, o.ray_address)
        return LocalEngine(settings, workers, gpus)

    def on_outcome(self, outcome: EpisodeOutcome) -> bool:
        """Records one outcome (index, failures log, progress); False when the batch should start no more."""
        state = self.states[outcome.key]
        if outcome.fatal:
            self.fatal = outcome.fatal
            return False
        for record in outcome.failures:
            record = {**record, "settings": state.settings}
            try:
                stat = FileStat.of(state.episode.video)
                record.update(size=stat.size, mtime_ns=stat.mtime_ns)
            except OSError:
                pass
            self.failures.append(record)
        state.attempts = outcome.attempts
        if not outcome.final:
            return True
        state.seconds, state.worker = outcome.seconds, outcome.worker
        if outcome.ok:
            state.status, state.duration, state.characters = DONE, outcome.duration, outcome.characters
            state.stage = state.error = None
            log.info("%s: done in %.1f s (%.1f s of video, %d characters)", outcome.key, outcome.seconds,
                     outcome.duration or 0.0, outcome.characters or 0)
        else:
            last = outcome.failures[-1] if outcome.failures else {}
            state.status, state.stage, state.error = FAILED, last.get("stage"), last.get("error")
            self.final_failures += 1
            log.warning("%s: failed in %s after %d attempt(s): %s", outcome.key, state.stage, outcome.attempts,
                        state.error)
        self._finished += 1
        if self._advance is not None:
            self._advance(self._finished, len(self.states))
        self.write_index()
        limit = self.options.max_failures
        if limit is not None and self.final_failures >= limit:
            log.error("%d episodes failed (--max-failures %d): starting no more", self.final_failures, limit)
            return False
        return True

    def write_index(self) -> None:
        states = list(self.states.values())
        counts: dict[str, int] = {}
        for state in states:
            counts[state.status] = counts.get(state.status, 0) + 1
        write_json(self.out / INDEX_NAME, {
            "format": 1, "input": str(self.options.input.resolve()), "engine": self.options.engine,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "counts": counts,
            "episodes": [s.to_dict(self.out) for s in states]})

    def execute(self) -> BatchReport:
        self.check_options()
        states = self.plan()
        with BatchLock(self.out):
            removed = remove_leftovers(self.out)
            if removed:
                log.info("removed %d temporary files a stopped run left in %s", removed, self.out)
            summaries = self.triage(states)
            todo = [s for s in states if s.status == PENDING]
            self._finished = len(states) - len(todo)
            log.info("%d episodes: %d finished before, %d failed for good before, %d to run", len(states),
                     sum(s.status == REUSED for s in states), sum(s.status == FAILED_BEFORE for s in states), len(todo))
            self.write_index()
            report = BatchReport(self.out, states, self.options.engine, summaries)
            try:
                if todo:
                    self._run(todo)
            finally:
                for state in states:
                    if state.status == PENDING:
                        state.status = NOT_RUN
                self.write_index()
            if self.fatal:
                raise UserError(self.fatal)
            self.write_corpus(report)
        return report

    def _run(self, todo: list[EpisodeState]) -> None:
        engine = self.engine(len(todo))
        jobs = [EpisodeJob(s.episode.key, str(s.episode.video), str(s.folder),
                           str(s.episode.cast) if s.episode.cast else None, s.settings) for s in todo]
        if engine.name == "local":
            log.info("%s", engine.describe())
        with progress_bar("episodes", quiet=self.options.quiet) as advance:
            self._advance = advance
            advance(self._finished, len(self.states))
            engine.run(jobs, self.on_outcome)
        self._advance = None

    def write_corpus(self, report: BatchReport) -> None:
        """Each show's identities, per-character table and plot, from its finished timelines."""
        from pipeline.batch.corpus import summarize, write_show
        from pipeline.timeline import read_timeline

        summaries = report.summaries
        for state in report.states:
            if state.status == DONE:
                document = read_timeline(state.folder / TIMELINE_NAME)
                summaries.setdefault(state.episode.show, []).append(summarize(state.episode, document))
        for show, items in sorted(summaries.items()):
            items.sort(key=lambda s: episode_order(s.episode))
            write_show(self.out, show, items)


def run_batch(options: BatchOptions) -> BatchReport:
    return BatchRun(options).execute()
