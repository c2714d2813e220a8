"""RAMer core: pure PyTorch multi-modal multi-label emotion recognition robust to missing modalities."""

from ramer_core.batch import MODALITIES, RamerBatch
from ramer_core.checkpoint import from_pretrained, save_pretrained
from ramer_core.config import ABLATIONS, RamerConfig
from ramer_core.errors import RamerInputError
from ramer_core.losses import orthogonality_loss, reverse_gradient, supervised_contrastive_loss
from ramer_core.model import RamerLoss, RamerModel, RamerOutput
from ramer_core.shuffle import stack_shuffle

__all__ = [
    "ABLATIONS",
    "MODALITIES",
    "RamerBatch",
    "RamerConfig",
    "RamerInputError",
    "RamerLoss",
    "RamerModel",
    "RamerOutput",
    "from_pretrained",
    "orthogonality_loss",
    "reverse_gradient",
    "save_pretrained",
    "stack_shuffle",
    "supervised_contrastive_loss",
]
