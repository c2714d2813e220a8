"""The benchmark kinds ``ramer_core.datasets.load_dataset`` reads; a module of its own so the command line can
list them without importing the readers (and torch)."""

DATASET_KINDS = ("mosei-aligned", "memor", "memor-fine", "m3ed", "feature-store", "synthetic")
