"""One episode in a worker: the code both engines run, so they fail, retry and stamp the same way.

A worker (a pool process or a Ray actor) holds one :class:`EpisodeWorker`, which builds one
:class:`pipeline.run.PipelineRunner` on its first episode: the models load once per worker, not per episode.
Each episode is tried up to ``max_attempts`` times; only transient errors are retried (an OSError such as
a flaky network share, MemoryError). A user error (a corrupt or faceless video, see
``pipeline.errors.USER_ERRORS``) or a bug fails the episode at once. The outcome says which stage failed.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 2.0
# OSErrors that no retry fixes: the file is missing, unreadable by permission, or the wrong kind of path.
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker needs to build its runner (plain values: they travel to processes and Ray actors)."""

    config: Path | None = None
    checkpoint: Path | None = None
    device: str | None = None        # None: the configuration's ("auto": CUDA when the worker sees a GPU)
    threads: int | None = None       # torch intra-op threads of the worker (None: torch's default)
    max_attempts: int = 3
    force: bool = False
    # "module:callable" called with these settings, returning a PipelineRunner-like object (its .run as
    # PipelineRunner.run); None: pipeline_runner. For embedding the batch, and for engine tests.
    runner_factory: str | None = None


@dataclass(frozen=True)
class EpisodeJob:
    key: str                         # show/name
    video: str
    output: str
    cast: str | None = None
    settings: str = ""               # the digest stamped beside the timeline (pipeline.batch.state)
    first_attempt: int = 1           # >1 when an earlier attempt died with its worker


@dataclass
class EpisodeOutcome:
    key: str
    ok: bool
    attempts: int
    failures: list[dict] = field(default_factory=list)  # one record per failed attempt (see failure_record)
    seconds: float = 0.0
    duration: float | None = None
    characters: int | None = None
    fatal: str | None = None         # the worker cannot run anything (bad checkpoint, missing model): stop all
    final: bool = True               # False: an attempt died with its worker and the episode goes again
    worker: int = field(default_factory=os.getpid)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EpisodeOutcome:
        return cls(**data)


def is_transient(error: BaseException) -> bool:
    """Worth another attempt: resource trouble (memory, I/O), not bad input and not a bug."""
    try:
        import av

        if isinstance(error, av.error.FFmpegError):   # undecodable media; some of these subclass OSError
            return False
    except ImportError:
        pass
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, OSError) and not isinstance(error, _PERMANENT_OS_ERRORS)


def failure_record(job: EpisodeJob, attempt: int, stage: str, error: BaseException | str, transient: bool,
                   final: bool) -> dict:
    """A line of failures.jsonl (the driver adds the file's size, mtime and the settings digest)."""
    if isinstance(error, BaseException):
        kind = type(error).__name__
        message = str(error) or kind
    else:
        kind, message = "WorkerDied", error
    return {"path": job.video, "episode": job.key, "stage": stage, "error": message, "type": kind,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "attempt": attempt, "transient": transient,
            "final": final, "worker": os.getpid()}


class _StageTracker:
    """Remembers which stage is running, from the runner's progress callbacks, for the failure record."""

    def __init__(self) -> None:
        self.running: str | None = None
        self.done: str | None = None

    def progress(self, stage: str, fraction: float) -> None:
        self.running = stage

    def stage_done(self, stage: str, record) -> None:
        self.running, self.done = None, stage

    @property
    def stage(self) -> str:
        if self.running:
            return self.running
        return f"after {self.done}" if self.done else "input"


def pipeline_runner(settings: WorkerSettings):
    """The worker's PipelineRunner: its configuration, checkpoint, device and torch threads."""
    import torch

    from pipeline.config import load_config
    from pipeline.run import PipelineRunner

    if settings.threads:
        torch.set_num_threads(settings.threads)
    runner = PipelineRunner(load_config(settings.config), checkpoint=settings.checkpoint, device=settings.device)
    log.info("worker %d: runner on %s, %d torch threads", os.getpid(), runner.device, torch.get_num_threads())
    return runner


def _factory(spec: str | None):
    if spec is None:
        return pipeline_runner
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class EpisodeWorker:
    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        self._runner = None

    def runner(self):
        if self._runner is None:
            self._runner = _factory(self.settings.runner_factory)(self.settings)
        return self._runner

    def process(self, job: EpisodeJob) -> EpisodeOutcome:
        from pipeline.errors import USER_ERRORS

        started = time.perf_counter()
        try:
            runner = self.runner()
        except USER_ERRORS as error:     # the same for every episode: the batch stops (exit 2)
            return EpisodeOutcome(job.key, False, job.first_attempt - 1, fatal=str(error))
        outcome = EpisodeOutcome(job.key, False, 0)
        for attempt in range(job.first_attempt, self.settings.max_attempts + 1):
            outcome.attempts = attempt
            tracker = _StageTracker()
            try:
                result = runner.run(job.video, job.output, cast=job.cast, force=self.settings.force,
                                    progress=tracker.progress, on_stage_done=tracker.stage_done)
            except Exception as error:  # noqa: BLE001  (isolation: one episode never takes the batch down)
                transient = is_transient(error)
                final = not transient or attempt >= self.settings.max_attempts
                record = failure_record(job, attempt, tracker.stage, error, transient, final)
                if not isinstance(error, USER_ERRORS) and not transient:   # a bug: keep where it happened
                    record["traceback"] = "".join(traceback.format_exception(error)[-6:])
                outcome.failures.append(record)
                log.info("%s: attempt %d failed in %s: %s", job.key, attempt, tracker.stage, record["error"])
                if final:
                    break
                time.sleep(RETRY_PAUSE_S * attempt)
                continue
            from pipeline.batch.state import write_stamp

            document = result.document
            write_stamp(Path(job.output), Path(job.video), document["video"]["sha256"],
                        job.settings, result.seconds)
            outcome.ok = True
            outcome.duration = float(document["video"]["duration"])
            outcome.characters = len(document["characters"])
            break
        outcome.seconds = time.perf_counter() - started
        return outcome
