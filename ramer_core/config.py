"""RamerConfig: dimensions, hyper-parameters, loss weights and one switch per part of the method.

Defaults follow the paper and its public code (CMU-MOSEI aligned dimensions, 6 labels). Structure
(dimensions, layers) and tunable parameters (weights, temperature, threshold) live in one flat
dataclass so that a checkpoint's ``config.json`` is the whole story.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ramer_core.errors import RamerInputError

MOSEI_LABELS = ("happy", "sad", "anger", "surprise", "disgust", "fear")

# name of an ablation -> the switch it turns off
ABLATIONS: dict[str, str] = {
    "no_reconstruction": "use_reconstruction",
    "no_cross_modal": "use_cross_modal",
    "no_adversarial": "use_adversarial",
    "no_contrastive": "use_contrastive",
    "no_personality": "use_personality",
    "no_stack_shuffle": "use_stack_shuffle",
}


@dataclass
class RamerConfig:
    # --- input dimensions -------------------------------------------------------------------
    text_dim: int = 300            # GloVe words in CMU-MOSEI aligned (MEmoR: 1024, BERT-large)
    visual_dim: int = 35           # Facet (MEmoR: 4302 = face 1024 + object 1230 + scene 2048)
    acoustic_dim: int = 74         # COVAREP (MEmoR: 6373, openSMILE ComParE)
    num_labels: int = 6
    label_names: tuple[str, ...] = MOSEI_LABELS
    personality_dim: int = 0       # 0 = the dataset has no personality vectors (MEmoR: 118)

    # --- structure ----------------------------------------------------------------------------
    hidden_size: int = 256
    text_layers: int = 3
    visual_layers: int = 3
    acoustic_layers: int = 3
    num_heads: int = 8
    ffn_size: int = 256            # feed-forward width of the encoder layers (public code: 256)
    dropout: float = 0.3
    max_positions: int = 512       # longest sequence the learned positional embedding covers
    latent_size: int = 64          # autoencoder bottleneck, also the contrastive projection
    initializer_range: float = 0.02  # N(0, 0.02) init of the encoders' Linear and position weights (public code)

    # --- method hyper-parameters --------------------------------------------------------------
    prototype_momentum: float = 0.99   # EMA of the positive/negative prototypes
    prototype_temperature: float = 0.1  # softmax temperature of latent-to-prototype similarity (public code: 1)
    prototype_hard_at_eval: bool = True  # eval: the closer prototype only, as the public code (training: soft mix)
    queue_size: int = 8192
    temperature: float = 0.07          # supervised contrastive temperature
    shuffle_stacks_samples: int = 4    # stack shuffle across samples: stacks, iterations
    shuffle_stacks_modalities: int = 3
    shuffle_iterations: int = 2
    shuffle_seed: int = 42
    threshold: float = 0.5             # decision threshold on probs (a threshold search overwrites it)

    # --- switches (one per part of the method, for ablation) ------------------------------------
    use_reconstruction: bool = True    # autoencoder, pos/neg prototypes filling missing modalities
    use_cross_modal: bool = True       # two-tier reconstruction aug_m -> beta_m
    use_adversarial: bool = True       # private/common extractors, discriminator + GRL, orthogonality
    use_contrastive: bool = True       # supervised contrastive loss with a queue over the 9 views
    use_personality: bool = True       # personality branch (active only when personality_dim > 0)
    use_stack_shuffle: bool = True     # aggregator trained on stack-shuffled samples/modalities
    detach_reconstruction_targets: bool = True  # False = the public objective (MSE pulls U too)

    # --- loss weights (public code) -----------------------------------------------------------
    weight_clf_u: float = 0.01
    weight_clf_aug: float = 0.1
    weight_clf_beta: float = 1.0
    weight_supcon: float = 1.0
    weight_recon_mse: float = 1.0
    weight_aug_mse: float = 1.0
    weight_beta_mse: float = 0.0
    weight_shuffle: float = 1.0
    weight_aggregator: float = 1.0     # unshuffled aggregator BCE (the public code forgets to add it)
    weight_adversarial: float = 0.01
    weight_orthogonality: float = 5e-6
    weight_common_clf: float = 0.5

    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in config.json

    ABLATIONS = ABLATIONS

    def __post_init__(self) -> None:
        self.label_names = tuple(self.label_names)
        if len(self.label_names) != self.num_labels:
            raise RamerInputError(
                f"RamerConfig: {len(self.label_names)} label_names for num_labels={self.num_labels}; "
                "give one name per label"
            )
        for name in ("text_dim", "visual_dim", "acoustic_dim", "num_labels", "hidden_size", "num_heads"):
            if getattr(self, name) <= 0:
                raise RamerInputError(f"RamerConfig: {name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise RamerInputError(
                f"RamerConfig: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )

    @property
    def input_dims(self) -> tuple[int, int, int]:
        return (self.text_dim, self.visual_dim, self.acoustic_dim)

    @property
    def layers(self) -> tuple[int, int, int]:
        return (self.text_layers, self.visual_layers, self.acoustic_layers)

    @property
    def personality_active(self) -> bool:
        return self.use_personality and self.personality_dim > 0

    # --- variants -----------------------------------------------------------------------------
    def ablation(self, name: str) -> RamerConfig:
        """This config with one part of the method switched off (see ``ABLATIONS``)."""
        if name not in ABLATIONS:
            raise RamerInputError(f"unknown ablation {name!r}; choose one of {sorted(ABLATIONS)}")
        return replace(self, **{ABLATIONS[name]: False})

    @classmethod
    def late_fusion_baseline(cls, **kwargs: Any) -> RamerConfig:
        """The same encoders and label attention, every RAMer part off: per-modality label-wise heads
        whose sigmoid scores are averaged over the modalities that are present."""
        switches = {switch: False for switch in ABLATIONS.values()}
        switches.update(kwargs)
        return cls(**switches)

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label_names"] = list(self.label_names)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RamerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RamerInputError(f"RamerConfig: unknown fields {unknown}; this checkpoint is from another version")
        return cls(**data)
