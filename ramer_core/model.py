"""RAMer: reconstruction-based adversarial model for multi-party multi-modal multi-label emotion recognition.

One file, read top to bottom: the small modules, then :class:`RamerModel` whose forward pass goes

    per modality: LayerNorm -> Linear -> + position -> Transformer encoder -> label attention  U_m [B, C, H]
    personality (multi-party): inter-personal then intra-personal modality-level attention
    reconstruction: autoencoder H -> 128 -> 64 -> 128 -> H, pos/neg prototypes fill missing modalities
    two-tier cross-modal reconstruction: aug_m from the other two + pad_m, beta_m from all three aug
    commonality/specificity: private/common extractors, modality discriminator through gradient reversal
    heads: label-wise classifier (max over modalities) + aggregator on beta; stack-shuffled aggregator loss

A modality whose presence flag is False (or whose time mask is empty) is never encoded: nothing of its
tensor reaches the output, which is rebuilt from the present modalities and the prototypes.

Where this differs from the public code, on purpose:
- the stack shuffle really shuffles (the public one always returns the reversed list) and the
  unshuffled aggregator loss is added (the public code computes it and drops it);
- the personality branch runs (the public one uses attributes it never defines);
- a missing modality's prototype mix is decided by the present modalities' similarity to their own
  prototypes (the public code asks the missing modality's own, meaningless, latent);
- reconstruction targets are detached: otherwise the MSE terms shrink U towards a constant, which in
  our runs stopped the model from learning at all;
- the second tier (beta) has its own MLP per modality (the public code reuses the first tier's
  projection), and the common classifier is label-wise (the public code classifies label 0's slot);
- the contrastive anchors are the batch's views, contrasted with each other and the whole queue (the
  public code also makes every queue row an anchor, which costs (N+Q)^2 for stale features).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ramer_core.batch import MODALITIES, RamerBatch
from ramer_core.config import RamerConfig
from ramer_core.errors import RamerInputError
from ramer_core.losses import (
    masked_bce_with_logits,
    masked_cross_entropy,
    masked_mean,
    masked_mse,
    orthogonality_loss,
    reverse_gradient,
    supervised_contrastive_loss,
)
from ramer_core.shuffle import stack_shuffle

log = logging.getLogger(__name__)

NUM_MODALITIES = len(MODALITIES)


@dataclass
class RamerOutput:
    probs: torch.Tensor                 # [B, C] final scores in [0, 1]
    logits: torch.Tensor                # [B, C] logit(probs), for ranking only
    modalities_used: torch.Tensor       # [B, 3] bool, modalities present for the scored target
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # weighted terms (labels given)
    loss: torch.Tensor | None = None    # scalar sum of ``losses``

    def serialize(self) -> dict:
        return {
            "probs": self.probs.detach().cpu().tolist(),
            "modalities_used": self.modalities_used.cpu().tolist(),
            "losses": {name: float(value.detach()) for name, value in self.losses.items()},
            "loss": None if self.loss is None else float(self.loss.detach()),
        }


# ----------------------------------------------------------------------------------------------------
# modules


class Dropout(nn.Module):
    """Inverted dropout. On CPU the keep-mask is drawn with ``torch.rand``: the same Bernoulli(1 - p)
    mask as ``nn.Dropout`` but several times faster there (``bernoulli_`` was a third of a training
    step); on GPU the fused ``F.dropout`` is used."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.is_cuda:
            return F.dropout(x, self.p, training=True)
        scaled_keep = torch.rand(x.shape, dtype=x.dtype, device=x.device).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * scaled_keep


class EncoderLayer(nn.Module):
    """Post-norm Transformer layer (BERT style, as the public code): self-attention with dropout on
    the attention probabilities, then a GELU feed-forward block."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_size: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.attn_out = nn.Linear(hidden_size, hidden_size)
        self.attn_norm = nn.LayerNorm(hidden_size)
        self.ffn_in = nn.Linear(hidden_size, ffn_size)
        self.ffn_out = nn.Linear(ffn_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        # x [N, T, H], key_valid [N, T] bool
        n, t, h = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)  # [N, nh, T, dh]
        if self.training and self.dropout.p > 0:
            # scale and key mask fused into one batched matmul: scores = bias + q k^T / sqrt(dh)
            bias = torch.zeros(n, t, dtype=q.dtype, device=x.device).masked_fill_(~key_valid, torch.finfo(q.dtype).min)
            bias = bias[:, None, None, :].expand(n, self.num_heads, 1, t).reshape(n * self.num_heads, 1, t)
            scores = torch.baddbmm(bias, q.reshape(n * self.num_heads, t, -1), k.reshape(n * self.num_heads, t, -1).transpose(1, 2),
                                   alpha=(h // self.num_heads) ** -0.5)                         # [N*nh, T, T]
            attended = (self.dropout(scores.softmax(dim=-1)) @ v.reshape(n * self.num_heads, t, -1)).view(n, self.num_heads, t, -1)
        else:  # no dropout: the fused kernel
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :])
        attended = attended.transpose(1, 2).reshape(n, t, h)
        x = self.attn_norm(x + self.dropout(self.attn_out(attended)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))


class ModalityEncoder(nn.Module):
    """LayerNorm(D) -> Linear(D -> H) + learned position -> Transformer encoder layers."""

    def __init__(self, input_dim: int, num_layers: int, config: RamerConfig):
        super().__init__()
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_proj = nn.Linear(input_dim, config.hidden_size)
        self.position = nn.Embedding(config.max_positions, config.hidden_size)
        self.dropout = Dropout(config.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(config.hidden_size, config.num_heads, config.ffn_size, config.dropout) for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x [N, T, D], mask [N, T] True = valid; every row has at least one valid step
        positions = torch.arange(x.shape[1], device=x.device)
        h = self.dropout(self.input_proj(self.input_norm(x)) + self.position(positions))  # [N, T, H]
        for layer in self.layers:
            h = layer(h, mask)
        return h                                                                          # [N, T, H]


class LabelAttention(nn.Module):
    """One attention distribution over time per label: U[n, c] = sum_t softmax_t(w_c . h_t) h_t."""

    def __init__(self, hidden_size: int, num_labels: int):
        super().__init__()
        self.score = nn.Linear(hidden_size, num_labels, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(h)                                                          # [N, T, C]
        scores = scores.masked_fill(~mask[..., None], torch.finfo(scores.dtype).min)  # (autocast: not h.dtype)
        return torch.einsum("ntc,nth->nch", scores.softmax(dim=1), h)                   # [N, C, H]


class MaskedAttention(nn.Module):
    """Multi-head attention over a small set of keys with a validity mask; a query with no valid key
    gets zeros (not NaN), so absent characters and segments are simply ignored."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.dropout = Dropout(dropout)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        # query [N, Lq, H], keys [N, Lk, H], key_valid [N, Lk] bool
        n, lq, h = query.shape
        heads = lambda x: x.view(n, x.shape[1], self.num_heads, h // self.num_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.query(query)), heads(self.key(keys)), heads(self.value(keys))  # [N, nh, L, dh]
        scores = (q @ k.transpose(-1, -2)) * (h // self.num_heads) ** -0.5                 # [N, nh, Lq, Lk]
        scores = scores.masked_fill(~key_valid[:, None, None, :], torch.finfo(scores.dtype).min)
        attended = self.dropout(scores.softmax(dim=-1)) @ v                                # [N, nh, Lq, dh]
        attended = self.out(attended.transpose(1, 2).reshape(n, lq, h))
        return attended * key_valid.any(dim=1).to(attended.dtype)[:, None, None]


class PersonalityBranch(nn.Module):
    """Personality auxiliary task with modality-level attention over a multi-party moment.

    Per modality, every (character, segment) token is its U plus its character's personality
    embedding (absent personality: nothing added, never invented). Inter-personal attention runs
    across the characters of each segment, then intra-personal attention lets the target segment
    attend over the target character's segments. The result refines present modalities and, for a
    missing one, supplies what the moment and the personality say about it.
    """

    def __init__(self, config: RamerConfig):
        super().__init__()
        h = config.hidden_size
        self.embed = nn.Sequential(nn.LayerNorm(config.personality_dim), nn.Linear(config.personality_dim, h))
        self.inter = nn.ModuleList(MaskedAttention(h, config.num_heads, config.dropout) for _ in MODALITIES)
        self.intra = nn.ModuleList(MaskedAttention(h, config.num_heads, config.dropout) for _ in MODALITIES)
        self.head_weight = nn.Parameter(torch.empty(config.num_labels, h))
        self.head_bias = nn.Parameter(torch.zeros(config.num_labels))
        nn.init.xavier_uniform_(self.head_weight)

    def forward(
        self,
        units: list[torch.Tensor],        # per modality [B, P, S, C, H], zeros where absent
        present: torch.Tensor,            # [B, P, S, 3] bool
        personality: torch.Tensor | None,  # [B, P, Dp]
        personality_present: torch.Tensor | None,  # [B, P] bool
        target_person: torch.Tensor,      # [B]
        target_segment: torch.Tensor,     # [B]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, p, s, c, h = units[0].shape
        batch_index = torch.arange(b, device=units[0].device)
        if personality is None:
            embedding = units[0].new_zeros(b, p, h)
            known = torch.zeros(b, p, dtype=torch.bool, device=units[0].device)
        else:
            known = personality_present.bool() if personality_present is not None else torch.ones(
                b, p, dtype=torch.bool, device=personality.device)
            # an unknown personality contributes nothing, whatever its tensor holds
            embedding = self.embed(torch.where(known[..., None], personality, 0.0)) * known[..., None]  # [B, P, H]
        contexts = []
        for m in range(NUM_MODALITIES):
            tokens = units[m] + embedding[:, :, None, None, :]                      # [B, P, S, C, H]
            valid = present[..., m] | known[:, :, None]                             # [B, P, S]
            # inter-personal: across the characters of each segment, per label
            across = tokens.permute(0, 2, 3, 1, 4).reshape(b * s * c, p, h)         # [B*S*C, P, H]
            across_valid = valid.permute(0, 2, 1)[:, :, None, :].expand(b, s, c, p).reshape(b * s * c, p)
            across = across + self.inter[m](across, across, across_valid)
            tokens = across.view(b, s, c, p, h).permute(0, 3, 1, 2, 4)              # [B, P, S, C, H]
            # intra-personal: the target segment attends over the target character's segments
            own = tokens[batch_index, target_person].permute(0, 2, 1, 3).reshape(b * c, s, h)  # [B*C, S, H]
            own_valid = valid[batch_index, target_person][:, None, :].expand(b, c, s).reshape(b * c, s)
            query = tokens[batch_index, target_person, target_segment].reshape(b * c, 1, h)
            contexts.append((query + self.intra[m](query, own, own_valid)).view(b, c, h))
        context = torch.stack(contexts, dim=1)                                      # [B, 3, C, H]
        aux_logits = torch.einsum("bch,ch->bc", context.mean(dim=1), self.head_weight) + self.head_bias
        return context, aux_logits


class Autoencoder(nn.Module):
    """H -> 128 -> 64 -> 128 -> H; the 64-d latent is also the contrastive projection."""

    def __init__(self, hidden_size: int, latent_size: int, with_decoder: bool):
        super().__init__()
        middle = hidden_size // 2
        self.encoder = nn.Sequential(nn.Linear(hidden_size, middle), nn.ReLU(), nn.Linear(middle, latent_size))
        self.decoder = (
            nn.Sequential(nn.Linear(latent_size, middle), nn.ReLU(), nn.Linear(middle, hidden_size))
            if with_decoder else None
        )


def _feature_extractor(hidden_size: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden_size, hidden_size), Dropout(dropout), nn.Tanh())


# ----------------------------------------------------------------------------------------------------
# the model


class RamerModel(nn.Module):
    def __init__(self, config: RamerConfig):
        super().__init__()
        self.config = config
        self.card: dict = {}
        h, c, d = config.hidden_size, config.num_labels, config.latent_size
        self.encoders = nn.ModuleList(
            ModalityEncoder(dim, layers, config) for dim, layers in zip(config.input_dims, config.layers, strict=True)
        )
        self.label_attention = nn.ModuleList(LabelAttention(h, c) for _ in MODALITIES)
        self.personality = PersonalityBranch(config) if config.personality_active else None

        needs_projection = config.use_reconstruction or config.use_contrastive
        self.autoencoders = (
            nn.ModuleList(Autoencoder(h, d, config.use_reconstruction) for _ in MODALITIES) if needs_projection else None
        )
        if config.use_cross_modal:
            self.aug_proj = nn.ModuleList(nn.Linear(3 * h, h) for _ in MODALITIES)
            self.beta_mlp = nn.ModuleList(
                nn.Sequential(nn.Linear(3 * h, h), nn.GELU(), nn.Linear(h, h)) for _ in MODALITIES
            )
        if config.use_adversarial:
            self.private_extractors = nn.ModuleList(_feature_extractor(h, 0.1) for _ in MODALITIES)
            self.common_extractor = _feature_extractor(h, config.dropout)
            self.discriminator = nn.Sequential(
                nn.Linear(h, h // 2), Dropout(0.1), nn.ReLU(), nn.Linear(h // 2, NUM_MODALITIES)
            )
            self.common_weight = nn.Parameter(torch.empty(c, h))
            self.common_bias = nn.Parameter(torch.zeros(c))
            nn.init.xavier_uniform_(self.common_weight)

        # label-wise classifier per modality, shared by the U, aug and beta stages (as in the paper)
        self.classifier_weight = nn.Parameter(torch.empty(NUM_MODALITIES, c, h))
        nn.init.kaiming_uniform_(self.classifier_weight, a=5**0.5)
        self.aggregator = nn.Sequential(nn.Linear(c * h, h), nn.ReLU(), Dropout(0.1), nn.Linear(h, c))

        # state: prototypes [modality, label, positive/negative, latent], contrastive queue
        self.register_buffer("prototypes", torch.zeros(NUM_MODALITIES, c, 2, d))
        self.register_buffer("queue", torch.zeros(config.queue_size if config.use_contrastive else 0, d))
        self.register_buffer("queue_ids", torch.full((self.queue.shape[0],), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))
        # the contrastive loss function; swappable so benchmarks can time other implementations in place
        self.contrastive_loss = supervised_contrastive_loss
        # (seed, step) of the stack shuffle: step advances once per training step; saved with the weights
        self.register_buffer("shuffle_state", torch.tensor([config.shuffle_seed, 0], dtype=torch.long))
        self._init_like_public_code()

    def _init_like_public_code(self) -> None:
        """Xavier-uniform weights where the public code builds the layer as ``MLLinear`` / ``MLAttention``
        (both call ``xavier_uniform_``): label attention, autoencoders, cross-modal projections and the
        aggregator. PyTorch's default Linear init has about a third of that variance; over the ~6 layers
        between the beta classifier and U it left ~70x less classification gradient at U at
        initialisation (2e-5 against 1.4e-3, hidden 64), so the auxiliary losses steered the encoders."""
        for modules in (self.label_attention, self.autoencoders, getattr(self, "aug_proj", None),
                        getattr(self, "beta_mlp", None), self.aggregator):
            if modules is None:
                continue
            for module in modules.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)

    # --- housekeeping ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.classifier_weight.device

    def reset_state(self) -> None:
        """Forget prototypes and queue (e.g. before training a loaded model on new data)."""
        self.prototypes.zero_()
        self.queue.zero_()
        self.queue_ids.fill_(-1)
        self.queue_ptr.zero_()
        self.queue_count.zero_()

    def reseed(self, seed: int) -> None:
        """Restart the stack-shuffle random stream from ``seed``."""
        self.shuffle_state.copy_(torch.tensor([int(seed), 0]))

    @property
    def shuffle_step(self) -> int:
        return int(self.shuffle_state[1])

    @shuffle_step.setter
    def shuffle_step(self, step: int) -> None:
        self.shuffle_state[1] = int(step)

    def param_groups(self, weight_decay: float = 0.01) -> list[dict]:
        """AdamW groups: no weight decay on biases, norms and the positional embeddings."""
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            plain = parameter.ndim < 2 or "norm" in name or "position" in name
            (no_decay if plain else decay).append(parameter)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def save_pretrained(self, directory, card: dict | None = None) -> None:
        from ramer_core.checkpoint import save_pretrained

        save_pretrained(self, directory, card)

    @classmethod
    def from_pretrained(cls, directory, map_location=None) -> RamerModel:
        from ramer_core.checkpoint import from_pretrained

        return from_pretrained(directory, map_location)

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, batch: RamerBatch) -> RamerOutput:
        config = self.config
        self._check(batch)
        b = batch.batch_size
        batch_index = torch.arange(b, device=batch.text.device)
        target_person, target_segment = batch.target_person.long(), batch.target_segment.long()
        # present = flagged present and at least one valid time step; [B, P, S, 3]
        present_all = batch.present.bool() & torch.stack([batch.mask(m).any(dim=-1) for m in MODALITIES], dim=-1)
        present = present_all[batch_index, target_person, target_segment]  # [B, 3]

        # 1. per-modality encoders + label attention -> U_m [B, C, H] (zeros where absent)
        context = None
        personality_logits = None
        if self.personality is not None:
            units_all = [self._encode_units(m, batch.features(name), batch.mask(name), present_all[..., m])
                         for m, name in enumerate(MODALITIES)]                                   # [B, P, S, C, H]
            context, personality_logits = self.personality(
                units_all, present_all, batch.personality, batch.personality_present, target_person, target_segment
            )
            units = torch.where(present[:, :, None, None], context, 0.0)                          # [B, 3, C, H]
            context = torch.where(present[:, :, None, None], 0.0, context)  # what fills a missing one
        else:
            def target(x):
                return x[batch_index, target_person, target_segment]
            units = torch.stack([
                self._encode_units(m, target(batch.features(name)), target(batch.mask(name)), present[:, m])
                for m, name in enumerate(MODALITIES)
            ], dim=1)                                                                            # [B, 3, C, H]

        # 2. reconstruction: autoencoder and prototypes standing in for missing modalities
        latents = None
        if config.use_reconstruction:
            latents = self._project(units)                                                      # [B, 3, C, d]
            recon = torch.stack([ae.decoder(latents[:, m]) for m, ae in enumerate(self.autoencoders)], dim=1)
            pad = self._prototype_padding(latents, present)                                     # [B, 3, C, H]
        else:
            recon = units
            pad = torch.zeros_like(units)
        if context is not None:
            pad = pad + context
        can_fill = config.use_reconstruction or context is not None

        # 3. two-tier cross-modal reconstruction
        if config.use_cross_modal:
            sources = torch.where(present[:, :, None, None], recon, pad)                        # [B, 3, C, H]
            aug = torch.stack([
                self.aug_proj[m](torch.cat([pad[:, k] if k == m else sources[:, k] for k in range(NUM_MODALITIES)], -1))
                for m in range(NUM_MODALITIES)
            ], dim=1)                                                                            # [B, 3, C, H]
            aug_all = aug.permute(0, 2, 1, 3).flatten(2)                                          # [B, C, 3H]
            beta = torch.stack([self.beta_mlp[m](aug_all) for m in range(NUM_MODALITIES)], dim=1)  # [B, 3, C, H]
            beta_valid = torch.ones_like(present)
        else:
            aug = None
            beta = torch.where(present[:, :, None, None], units, pad)
            beta_valid = present | can_fill

        # 4. heads and final score
        clf_beta, any_valid = self._max_over_modalities(self._classify(beta), beta_valid)         # [B, C]
        agg_logits = self.aggregator(beta.flatten(2))                                           # [B, 3, C]
        agg_probs = masked_mean_over_modalities(agg_logits.sigmoid(), beta_valid)               # [B, C]
        probs = (agg_probs + clf_beta.sigmoid()) / 2
        eps = torch.finfo(probs.dtype).eps
        output = RamerOutput(probs=probs, logits=torch.logit(probs, eps=eps), modalities_used=present)
        if batch.labels is None:
            return output

        # 5. losses (weighted); stateful updates only in training mode
        labels = batch.labels.to(probs.dtype)
        weighted: dict[str, torch.Tensor] = {}

        def add(name: str, weight: float, compute):
            if weight != 0.0:
                weighted[name] = weight * compute()

        # reconstruction targets are detached: U should be reconstructed, not shrunk to be easy to reconstruct
        target_units = units.detach()
        clf_units, any_present = self._max_over_modalities(self._classify(units), present)
        add("clf_u", config.weight_clf_u, lambda: masked_bce_with_logits(clf_units, labels, any_present[:, None]))
        add("clf_beta", config.weight_clf_beta, lambda: masked_bce_with_logits(clf_beta, labels, any_valid[:, None]))
        add("aggregator", config.weight_aggregator, lambda: masked_bce_with_logits(
            agg_logits, labels[:, None].expand_as(agg_logits), beta_valid[:, :, None]))
        if config.use_cross_modal:
            clf_aug = self._classify(aug).amax(dim=1)
            add("clf_aug", config.weight_clf_aug, lambda: masked_bce_with_logits(clf_aug, labels))
            add("aug_mse", config.weight_aug_mse, lambda: sum_over_modalities(masked_mse, aug, target_units, present))
            add("beta_mse", config.weight_beta_mse, lambda: sum_over_modalities(masked_mse, beta, target_units, present))
        if config.use_reconstruction:
            add("recon_mse", config.weight_recon_mse, lambda: sum_over_modalities(masked_mse, recon, target_units, present))
        if config.use_stack_shuffle:
            add("shuffle", config.weight_shuffle, lambda: self._shuffle_loss(beta, beta_valid, labels))
        if config.use_adversarial:
            self._adversarial_losses(units, beta, present, beta_valid, labels, add)
        if personality_logits is not None:
            add("personality", config.weight_personality, lambda: masked_bce_with_logits(personality_logits, labels))
        if config.use_contrastive:
            anchors, anchor_ids = self._contrastive_views(units, aug, beta, present, beta_valid, labels, latents)
            count = int(self.queue_count)
            add("supcon", config.weight_supcon, lambda: self.contrastive_loss(
                anchors, anchor_ids, self.queue[:count], self.queue_ids[:count], config.temperature))
            # a non-finite step is skipped by the trainer; its features must not poison queue or prototypes
            if self.training and bool(torch.isfinite(anchors).all()):
                self._enqueue(anchors.detach(), anchor_ids)
        if self.training:
            if config.use_reconstruction and bool(torch.isfinite(latents).all()):
                self._update_prototypes(latents.detach(), present, labels)
            self.shuffle_state[1] += 1

        output.losses = weighted
        output.loss = torch.stack(list(weighted.values())).sum() if weighted else probs.sum() * 0.0
        return output

    # --- pieces of the forward pass ------------------------------------------------------------------
    def _encode_units(self, m: int, x: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """U for every present sequence of modality ``m``: x [..., T, D] -> [..., C, H]; absent rows are
        never encoded and stay zero (their tensors cannot reach the output)."""
        lead = x.shape[:-2]
        x, mask, present = x.reshape(-1, *x.shape[-2:]), mask.reshape(-1, mask.shape[-1]), present.reshape(-1)
        out = x.new_zeros(x.shape[0], self.config.num_labels, self.config.hidden_size)
        rows = present.nonzero().squeeze(1)
        if rows.numel() > 0:
            x, mask = x.index_select(0, rows), mask.index_select(0, rows)
            steps = int(mask.any(dim=0).nonzero().max()) + 1  # drop padding beyond the longest sequence
            x, mask = x[:, :steps], mask[:, :steps]
            units = self.label_attention[m](self.encoders[m](x, mask), mask)   # [n, C, H]
            out = out.index_put((rows,), units.to(out.dtype))
        return out.view(*lead, *out.shape[1:])

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        """Autoencoder latents per modality: [B, 3, C, H] -> [B, 3, C, d]."""
        return torch.stack([ae.encoder(features[:, m]) for m, ae in enumerate(self.autoencoders)], dim=1)

    def _prototype_padding(self, latents: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """A stand-in U for every modality, decoded from its positive/negative prototypes mixed by how
        strongly the *present* modalities say each label is on (0.5 when none is present)."""
        prototypes = self.prototypes.to(latents.dtype, copy=True)  # snapshot: updated in place after forward
        normalized = F.normalize(latents, dim=-1)                                               # [B, 3, C, d]
        similarity = torch.einsum("bmcd,mcnd->bmcn", normalized, prototypes)
        positive = (similarity / self.config.prototype_temperature).softmax(dim=-1)[..., 0]     # [B, 3, C]
        vote = masked_mean_over_modalities(positive, present, empty_value=0.5)                  # [B, C]
        mixed = (vote[:, None, :, None] * prototypes[None, :, :, 0]
                 + (1 - vote[:, None, :, None]) * prototypes[None, :, :, 1])                    # [B, 3, C, d]
        return torch.stack([ae.decoder(mixed[:, m]) for m, ae in enumerate(self.autoencoders)], dim=1)

    def _classify(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bmch,mch->bmc", features, self.classifier_weight.to(features.dtype))  # [B, 3, C]

    @staticmethod
    def _max_over_modalities(logits: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Label-wise max over the valid modalities: [B, 3, C] -> [B, C] (0 where none is valid)."""
        any_valid = valid.any(dim=1)                                                             # [B]
        masked = logits.masked_fill(~valid[:, :, None], torch.finfo(logits.dtype).min)
        return torch.where(any_valid[:, None], masked.amax(dim=1), 0.0), any_valid

    def _shuffle_loss(self, beta: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Aggregator BCE on stacks regrouped per label: samples across the batch (per modality slot) and
        modalities across the sample (per sample), each by a seeded random stack shuffle."""
        config = self.config
        b, n_mod, c, _ = beta.shape
        seed, step = self.shuffle_state.tolist()
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        samples = stack_shuffle(b, c * n_mod, config.shuffle_stacks_samples, config.shuffle_iterations, generator)
        modalities = stack_shuffle(n_mod, c * b, config.shuffle_stacks_modalities, config.shuffle_iterations, generator)
        sample_index = samples.view(c, n_mod, b).permute(2, 1, 0).to(beta.device)             # [B, 3, C]
        modality_index = modalities.view(c, b, n_mod).permute(1, 2, 0).to(beta.device)        # [B, 3, C]
        label_index = torch.arange(c, device=beta.device).expand(b, n_mod, c)
        shuffled = beta[sample_index, modality_index, label_index]                             # [B, 3, C, H]
        logits = self.aggregator(shuffled.flatten(2))                                          # [B, 3, C]
        return masked_bce_with_logits(
            logits, labels[sample_index, label_index], valid[sample_index, modality_index]
        )

    def _adversarial_losses(self, units, beta, present, beta_valid, labels, add) -> None:
        config = self.config
        private = [self.private_extractors[m](units[:, m]) for m in range(NUM_MODALITIES)]   # [B, C, H] each
        common = [self.common_extractor(beta[:, m]) for m in range(NUM_MODALITIES)]
        # discriminator learns modality from private features; through the reversal it is fooled by common
        add("adversarial", config.weight_adversarial, lambda: sum(
            masked_cross_entropy(self.discriminator(private[m]), m, present[:, m, None])
            + masked_cross_entropy(self.discriminator(reverse_gradient(common[m])), m, beta_valid[:, m, None])
            for m in range(NUM_MODALITIES)
        ))
        pairs = [(0, 1), (0, 2), (1, 2)]
        add("orthogonality", config.weight_orthogonality, lambda: sum(
            orthogonality_loss(private[i], private[j], present[:, i] & present[:, j]) for i, j in pairs
        ) + sum(orthogonality_loss(common[m], private[m], present[:, m]) for m in range(NUM_MODALITIES)))
        common_feature = sum(common[m] * beta_valid[:, m, None, None] for m in range(NUM_MODALITIES))  # [B, C, H]
        common_logits = torch.einsum("bch,ch->bc", common_feature, self.common_weight) + self.common_bias
        add("common_clf", config.weight_common_clf, lambda: masked_bce_with_logits(common_logits, labels))

    def _contrastive_views(self, units, aug, beta, present, beta_valid, labels, latents):
        """The 9 views {U, aug, beta} x modality as normalised latents with class id
        (modality, label, label on/off): id = (2 m + off) C + c. Views of absent modalities' U are left out."""
        c = self.config.num_labels
        views = [(latents if latents is not None else self._project(units), present)]
        if aug is not None:
            views += [(self._project(aug), torch.ones_like(present)), (self._project(beta), beta_valid)]
        else:  # without cross-modal reconstruction beta is U itself where present: add only the filled ones
            views += [(self._project(beta), beta_valid & ~present)]
        modality = torch.arange(NUM_MODALITIES, device=labels.device)[None, :, None]            # [1, 3, 1]
        label = torch.arange(c, device=labels.device)[None, None, :]                            # [1, 1, C]
        ids = (2 * modality + (labels[:, None, :] < 0.5).long()) * c + label                   # [B, 3, C]
        features, id_list = [], []
        for latent, valid in views:
            keep = valid[:, :, None].expand_as(ids)
            features.append(F.normalize(latent.float(), dim=-1)[keep])                         # [n, d]
            id_list.append(ids[keep])
        return torch.cat(features), torch.cat(id_list)

    @torch.no_grad()
    def _enqueue(self, features: torch.Tensor, ids: torch.Tensor) -> None:
        size = self.queue.shape[0]
        if size == 0 or features.shape[0] == 0:
            return
        features, ids = features[-size:], ids[-size:]
        slots = (int(self.queue_ptr) + torch.arange(features.shape[0], device=features.device)) % size
        self.queue[slots] = features.to(self.queue.dtype)
        self.queue_ids[slots] = ids
        self.queue_ptr.fill_((int(self.queue_ptr) + features.shape[0]) % size)
        self.queue_count.fill_(min(size, int(self.queue_count) + features.shape[0]))

    @torch.no_grad()
    def _update_prototypes(self, latents: torch.Tensor, present: torch.Tensor, labels: torch.Tensor) -> None:
        """EMA (momentum mu) of normalised latents, exactly as if the samples were folded in one by one:
        prototype <- mu^n prototype + sum_i (1 - mu) mu^(n - 1 - rank_i) z_i over the n members."""
        mu = self.config.prototype_momentum
        normalized = F.normalize(latents.float(), dim=-1)                                       # [B, 3, C, d]
        on = labels >= 0.5
        member = present[:, :, None, None] & torch.stack([on, ~on], dim=-1)[:, None]           # [B, 3, C, 2]
        member = member.float()
        count = member.sum(dim=0)                                                               # [3, C, 2]
        rank = member.cumsum(dim=0) - 1
        weight = (1 - mu) * torch.pow(mu, (count - 1 - rank).clamp_min(0)) * member            # [B, 3, C, 2]
        update = torch.einsum("bmcs,bmcd->mcsd", weight, normalized)
        self.prototypes.mul_(torch.pow(mu, count)[..., None]).add_(update.to(self.prototypes.dtype))

    def _check(self, batch: RamerBatch) -> None:
        config = self.config
        for name, dim in zip(MODALITIES, config.input_dims, strict=True):
            x = batch.features(name)
            if x.ndim != 5 or x.shape[-1] != dim:
                raise RamerInputError(
                    f"RamerBatch.{name} has shape {tuple(x.shape)}; this model expects [B, P, S, T, {dim}] "
                    f"(config.{name}_dim); rebuild the features or the model with matching dimensions"
                )
            if x.shape[-2] > config.max_positions:
                raise RamerInputError(
                    f"RamerBatch.{name} has {x.shape[-2]} time steps, more than config.max_positions="
                    f"{config.max_positions}; cut or pool the sequence"
                )
        if batch.labels is not None and batch.labels.shape != (batch.batch_size, config.num_labels):
            raise RamerInputError(
                f"RamerBatch.labels has shape {tuple(batch.labels.shape)}; expected "
                f"[{batch.batch_size}, {config.num_labels}] multi-hot for labels {list(config.label_names)}"
            )
        if self.personality is not None and batch.personality is not None \
                and batch.personality.shape[-1] != config.personality_dim:
            raise RamerInputError(
                f"RamerBatch.personality has {batch.personality.shape[-1]} features; the model expects "
                f"config.personality_dim={config.personality_dim}"
            )


def masked_mean_over_modalities(values: torch.Tensor, valid: torch.Tensor, empty_value: float = 0.5) -> torch.Tensor:
    """Mean over dim 1 (modalities) of ``values`` [B, 3, ...] where ``valid`` [B, 3]; ``empty_value`` if none."""
    weight = valid.to(values.dtype).view(*valid.shape, *([1] * (values.ndim - 2)))
    total = weight.sum(dim=1)
    mean = (values * weight).sum(dim=1) / total.clamp_min(1.0)
    return torch.where(total > 0, mean, torch.full_like(mean, empty_value))


def sum_over_modalities(loss_fn, prediction: torch.Tensor, target: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Sum over modalities of a per-modality masked loss (the public code sums the three MSEs)."""
    return sum(loss_fn(prediction[:, m], target[:, m], present[:, m]) for m in range(NUM_MODALITIES))


__all__ = ["RamerModel", "RamerOutput", "masked_mean", "masked_mean_over_modalities"]
