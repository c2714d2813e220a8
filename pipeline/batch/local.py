"""The local engine: a pool of worker processes on this machine (nothing to install or start).

Each worker is a fresh interpreter (spawn: no forked CUDA or OpenMP state) holding one
:class:`~pipeline.batch.worker.EpisodeWorker`, so its models load once and serve every episode it gets. On a
machine with GPUs each worker sees one GPU (``CUDA_VISIBLE_DEVICES``, round robin when there are more
workers than GPUs): every library it loads then uses that device as ``cuda``, whatever index it is. The
torch threads of the cores are shared out (``cores // workers`` each).

A worker that dies (segfault, out-of-memory kill) breaks the pool: the episodes it and the other workers
had in hand count one attempt each (a crash cannot be pinned on one of them), a fresh pool starts, and
those episodes go again until their attempts run out. Workers exit when the batch process dies (even by
SIGKILL), so a restart never races an orphan writing the same episode.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from pipeline.batch.worker import EpisodeJob, EpisodeOutcome, EpisodeWorker, WorkerSettings, failure_record

log = logging.getLogger(__name__)

PARENT_POLL_S = 0.5
CRASH_MESSAGE = "the worker process died (a crash, the out-of-memory killer, or a kill signal)"

_worker: EpisodeWorker | None = None


def visible_gpus(device: str | None) -> list[str]:
    """The GPUs the workers share out (CUDA_VISIBLE_DEVICES entries or indices); none for ``cpu``."""
    if device == "cpu":
        return []
    import torch

    count = torch.cuda.device_count()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def _init_worker(settings: WorkerSettings, gpu_slots, parent: int, level: int) -> None:
    """Runs first in each worker process: its GPU, threads and logging, and a watch on the parent."""
    global _worker
    if gpu_slots is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_slots.get()   # before anything touches CUDA
    if settings.threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(settings.threads)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()
    _worker = EpisodeWorker(settings)


def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)   # the batch is gone: nobody will read our result, and a restart must not race us
        time.sleep(PARENT_POLL_S)


def _process(job: EpisodeJob) -> dict:
    return _worker.process(job).to_dict()


class LocalEngine:
    name = "local"

    def __init__(self, settings: WorkerSettings, workers: int, gpus: list[str] | None = None):
        self.settings = settings
        self.workers = workers
        self.gpus = list(gpus or [])
        self.context = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None

    def describe(self) -> str:
        where = f"{len(self.gpus)} GPU(s)" if self.gpus else "CPU"
        return f"local engine: {self.workers} worker process(es) on {where}, {self.settings.threads} threads each"

    def _new_pool(self) -> ProcessPoolExecutor:
        slots = None
        if self.gpus:
            slots = self.context.Queue()
            for k in range(self.workers):
                slots.put(self.gpus[k % len(self.gpus)])
        root = logging.getLogger()
        level = logging.DEBUG if root.getEffectiveLevel() <= logging.DEBUG else logging.WARNING
        return ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=_init_worker,
                                   initargs=(self.settings, slots, os.getpid(), level))

    def run(self, jobs: list[EpisodeJob], on_outcome: Callable[[EpisodeOutcome], bool]) -> None:
        """Runs ``jobs``; ``on_outcome`` gets each outcome and returns False to start no more."""
        pending = deque(jobs)
        running: dict[Future, EpisodeJob] = {}
        go_on = True
        try:
            while (pending and go_on) or running:
                if self._pool is None:
                    self._pool = self._new_pool()
                while go_on and pending and len(running) < self.workers:
                    job = pending.popleft()
                    running[self._pool.submit(_process, job)] = job
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                crashed = []
                for future in done:
                    job = running.pop(future)
                    try:
                        outcome = EpisodeOutcome.from_dict(future.result())
                    except BrokenProcessPool:
                        crashed.append(job)
                        continue
                    go_on = on_outcome(outcome) and go_on
                if crashed:   # every unfinished future of a broken pool fails: collect them all
                    crashed.extend(running.pop(f) for f in list(running))
                    self._pool.shutdown(wait=True, cancel_futures=True)
                    self._pool = None
                    for job in crashed:
                        outcome, retry = self._crashed(job)
                        go_on = on_outcome(outcome) and go_on
                        if retry is not None:
                            pending.appendleft(retry)
        except BaseException:
            self._terminate()
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def _crashed(self, job: EpisodeJob) -> tuple[EpisodeOutcome, EpisodeJob | None]:
        """The outcome of an attempt that died with its worker, and the job's next attempt if it has one."""
        attempt = job.first_attempt
        final = attempt >= self.settings.max_attempts
        record = failure_record(job, attempt, "worker", CRASH_MESSAGE, transient=True, final=final)
        log.warning("%s: %s (attempt %d)", job.key, CRASH_MESSAGE, attempt)
        return EpisodeOutcome(job.key, False, attempt, [record], final=final), \
            None if final else replace(job, first_attempt=attempt + 1)

    def _terminate(self) -> None:
        """Stops the workers now (interrupt): their episodes stay unfinished, their caches resumable."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):
            if process.is_alive():
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
