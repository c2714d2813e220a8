"""Batch processing of TV-show corpora: many episodes, one command, one machine or a Ray cluster.

    inputs      the episodes of a folder or a CSV/JSONL manifest
    state       what survives between runs: stamps, failures.jsonl, the lock, leftover clean-up
    worker      one episode in a worker (shared by both engines): retries, failure records, stamps
    local       the default engine: a spawn process pool, one runner (and GPU) per worker
    ray_engine  Ray Data with stateful actors (optional extra ``.[distributed]``)
    identities  characters matched across a show's episodes into show-level identities
    corpus      identities.json, characters.csv and the emotion-mix plot per show
    driver      plan, skip what is finished, run, record, write the corpus

See ``python -m pipeline batch --help`` and the README's "Batch processing" section.
"""

__all__ = ["BatchOptions", "BatchReport", "run_batch"]


def __getattr__(name: str):
    """The driver loads on first use: worker processes import only the engine and worker modules."""
    if name in __all__:
        from pipeline.batch import driver

        return getattr(driver, name)
    raise AttributeError(name)
