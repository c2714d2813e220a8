"""RAMer core: pure PyTorch multi-modal multi-label emotion recognition robust to missing modalities.

The names below load on first use (PEP 562), so importing a light module such as ``ramer_core.errors``
does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MODALITIES": "batch", "RamerBatch": "batch",
    "from_pretrained": "checkpoint", "save_pretrained": "checkpoint",
    "ABLATIONS": "config", "RamerConfig": "config",
    "RamerInputError": "errors",
    "orthogonality_loss": "losses", "reverse_gradient": "losses", "supervised_contrastive_loss": "losses",
    "RamerLoss": "model", "RamerModel": "model", "RamerOutput": "model",
    "stack_shuffle": "shuffle",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ramer_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ramer_core.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
