"""The Ray engine: Ray Data with one row per episode and a pool of stateful actors that load models once.

``--ray-address ADDR`` joins an existing cluster (every node needs this package installed and the videos and
OUT on a filesystem it sees at the same paths); without it a local Ray starts for the batch and stops after
it. On a cluster with GPUs each actor asks for one (``num_gpus=1``; Ray sets its CUDA_VISIBLE_DEVICES).
An episode's Python errors are retried inside the actor like the local engine does; an actor that dies is
restarted by Ray and its episode retried up to the attempts left (``max_task_retries``), and an episode that
kills its actor every time is dropped by Ray Data (``max_errored_blocks=-1``) and recorded as failed here.
Ray is imported only by this engine (``pip install '.[distributed]'``).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace

from pipeline.batch.worker import EpisodeJob, EpisodeOutcome, EpisodeWorker, WorkerSettings, failure_record
from pipeline.errors import UserError

log = logging.getLogger(__name__)

LOCAL_OBJECT_STORE_BYTES = 256 * 2**20   # rows are a few hundred bytes each: the store only needs Ray's minimum
CRASH_MESSAGE = "the Ray worker died on every attempt (a crash, the out-of-memory killer, or a lost node)"


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install '.[distributed]'") from None
    return ray


class EpisodeActor:
    """A Ray Data actor: one EpisodeWorker (one PipelineRunner) for every episode this actor is given."""

    def __init__(self, settings: WorkerSettings):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        self.worker = EpisodeWorker(settings)

    def __call__(self, batch: dict) -> dict:
        outcomes = []
        for text in batch["job"]:
            job = EpisodeJob(**json.loads(str(text)))
            outcomes.append(json.dumps(self.worker.process(job).to_dict()))
        return {"outcome": outcomes}


class RayEngine:
    name = "ray"

    def __init__(self, settings: WorkerSettings, workers: int, address: str | None = None):
        self.settings = settings
        self.workers = workers
        self.address = address
        self.num_gpus = 0
        self.num_cpus = 1.0

    def describe(self) -> str:
        where = self.address or "a local Ray"
        return (f"ray engine on {where}: {self.workers} actor(s), {self.num_cpus:g} CPU and "
                f"{self.num_gpus} GPU each")

    def start(self) -> bool:
        """Connects to (or starts) Ray and sizes the actors; returns whether this call started Ray."""
        ray = import_ray()
        started = False
        if not ray.is_initialized():
            options = {"logging_level": logging.WARNING, "include_dashboard": False}
            if self.address:
                options["address"] = self.address
            else:
                options.update(num_cpus=max(os.cpu_count() or 1, self.workers),
                               object_store_memory=LOCAL_OBJECT_STORE_BYTES)
            try:
                ray.init(**options)
            except (ConnectionError, ValueError, RuntimeError) as error:
                raise UserError(f"cannot connect to Ray at {self.address or 'a new local cluster'}: {error}") from None
            started = True
        resources = ray.cluster_resources()
        cpus = float(resources.get("CPU", 1.0))
        node_cpus = [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        per_node = max(node_cpus) if node_cpus else cpus
        self.num_cpus = float(max(1, min(int(cpus // self.workers), int(per_node))))
        gpus = float(resources.get("GPU", 0.0))
        if self.settings.device == "cuda" and gpus < 1:
            raise UserError("--device cuda, but the Ray cluster has no GPUs")
        self.num_gpus = 1 if gpus >= 1 and self.settings.device != "cpu" else 0
        device = "cuda" if self.num_gpus else "cpu"
        self.settings = replace(self.settings, device=device, threads=int(self.num_cpus))
        return started

    def run(self, jobs: list[EpisodeJob], on_outcome: Callable[[EpisodeOutcome], bool]) -> None:
        ray = import_ray()
        started = self.start()
        log.info("%s", self.describe())
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False        # the batch draws its own bar over episodes
        context.print_on_execution_start = False
        context.max_errored_blocks = -1             # an episode that kills its actor every time: dropped, not fatal
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        seen: set[str] = set()
        stopped = False
        try:
            rows = [{"job": json.dumps(asdict(job))} for job in jobs]
            dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
            with warnings.catch_warnings():   # max_task_retries still travels as a plain Ray remote argument
                warnings.simplefilter("ignore")
                mapped = dataset.map_batches(
                    EpisodeActor, fn_constructor_kwargs={"settings": self.settings},
                    compute=ray.data.ActorPoolStrategy(size=self.workers, max_tasks_in_flight_per_actor=1),
                    batch_size=1, batch_format="numpy", num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                    max_restarts=-1, max_task_retries=max(0, self.settings.max_attempts - 1))
            for row in mapped.iter_rows():
                outcome = EpisodeOutcome.from_dict(json.loads(row["outcome"]))
                seen.add(outcome.key)
                if not on_outcome(outcome):
                    stopped = True
                    break
        finally:
            if started:
                ray.shutdown()
        if stopped:
            return
        for job in jobs:   # no row came back: Ray Data dropped it after its actor died on every attempt
            if job.key not in seen:
                attempt = self.settings.max_attempts
                record = failure_record(job, attempt, "worker", CRASH_MESSAGE, transient=True, final=True)
                if not on_outcome(EpisodeOutcome(job.key, False, attempt, [record])):
                    return
