"""Training RAMer on a user's labelled videos (``pipeline train|evaluate --annotations``).

- :mod:`pipeline.training.annotations`: the MELD-layout CSV, checked row by row (bad rows keep their line);
- :mod:`pipeline.training.features`: each row's features from ``pipeline run``'s own stages, cached per row;
- :mod:`pipeline.training.corpus`: samples as the pipeline scores them, training, the model card, evaluation;
- :mod:`pipeline.training.text_layers`: tuning MiniLM's top blocks on labelled text (the default checkpoint's
  text encoder, rebuilt by ``benchmarks/default_model.py``).
"""
