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

Following the public code (anonymousAccount01/RAMer): LayerNorm on the inputs and after input
projection + position; encoder Linear/position weights N(0, 0.02); xavier_uniform_ where it builds
MLLinear/MLAttention; no dropout in the aggregator; personality encoded and concatenated to each
token (no emotion head of its own); the closer prototype at evaluation (a soft mix in training).

Where this differs from the public code, on purpose (each a documented choice, most switchable):
- the stack shuffle really shuffles (the public one always returns the reversed list) and the
  unshuffled aggregator loss is added (the public code computes it and drops it: weight_aggregator);
- the personality branch runs (the public one uses attributes it never defines); concatenation is
  followed by a per-modality Linear back to H, so the rest of the model keeps its width;
- a missing modality's prototype mix is decided by the present modalities' similarity to their own
  prototypes (the public code asks the missing modality's own, meaningless, latent), with softmax
  temperature ``prototype_temperature`` 0.1 (public code: 1); ``prototype_hard_at_eval`` switches the
  evaluation-time hard choice off;
- reconstruction targets are detached (``detach_reconstruction_targets``; False runs the public
  objective): otherwise the MSE terms shrink U towards a constant, which in our runs stopped the
  model from learning at all;
- the second tier (beta) has its own MLP per modality (the public code reuses the first tier's
  projection), and the common classifier is label-wise (the public code classifies label 0's slot);
- the contrastive anchors are the batch's views, contrasted with each other and the whole queue (the
  public code also makes every queue row an anchor, which costs (N+Q)^2 for stale features);
- state (queue, prototypes, shuffle step) changes only in :meth:`RamerModel.update_state`, which the
  trainer calls after a successful optimiser step (the public code enqueues inside forward).

Where the label-specific parts degenerate: with one time step per sequence (T = 1: MEmoR's released
features are one vector per (character, segment), and M3ED with ``unit="utterance"``) label
attention has one step to weigh, so U_m is the same vector for every label; so are its latents,
aug and beta, and the 9-view contrastive loss then contrasts identical vectors with different class
ids. Label specificity is left to the label-wise classifier and aggregator weights. CMU-MOSEI (60
words) and M3ED by dialogue (up to 60 utterances) give real sequences.
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
class RamerParts:
    """What the forward pass computed besides the scores: what :meth:`RamerModel.loss` and
    :meth:`RamerModel.update_state` need. Shapes per sample b, modality m, label c."""

    units: torch.Tensor            # [B, 3, C, H] U_m (zeros where absent)
    recon: torch.Tensor            # [B, 3, C, H] autoencoder reconstruction of U (U itself without it)
    pad: torch.Tensor              # [B, 3, C, H] the stand-in for each modality (prototypes + context)
    aug: torch.Tensor | None       # [B, 3, C, H] first-tier cross-modal reconstruction
    beta: torch.Tensor             # [B, 3, C, H] second tier (or U / pad without cross-modal)
    latents: torch.Tensor | None   # [B, 3, C, d] autoencoder latents of U
    present: torch.Tensor          # [B, 3] bool, modality present for the target
    beta_valid: torch.Tensor       # [B, 3] bool, beta_m exists
    clf_beta: torch.Tensor         # [B, C] label-wise classifier logits on beta, max over modalities
    any_valid: torch.Tensor        # [B] bool, some beta_m exists
    agg_logits: torch.Tensor       # [B, 3, C] aggregator logits per modality slot
    # filled by loss(): the contrastive views as computed for the loss, enqueued by update_state()
    contrastive_views: tuple[torch.Tensor, torch.Tensor] | None = None  # ([N, d] normalised, [N] ids)


@dataclass
class RamerOutput:
    probs: torch.Tensor                 # [B, C] final scores in [0, 1]
    logits: torch.Tensor                # [B, C] logit(probs), for ranking only
    modalities_used: torch.Tensor       # [B, 3] bool, modalities present for the scored target
    parts: RamerParts | None = None     # representations for loss() / update_state()

    def serialize(self) -> dict:
        return {"probs": self.probs.detach().cpu().tolist(), "modalities_used": self.modalities_used.cpu().tolist()}


@dataclass
class RamerLoss:
    total: torch.Tensor                 # scalar, the sum of ``terms``
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # each term already times its weight

    def serialize(self) -> dict:
        return {"total": float(self.total.detach()),
                "terms": {name: float(value.detach()) for name, value in self.terms.items()}}


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
    """LayerNorm(D) -> Linear(D -> H) + learned position -> LayerNorm -> Transformer encoder layers
    (the public code's ``Normalize`` + ``TfEmbeddings`` + ``TfEncoder``); Linear and position weights
    start N(0, initializer_range), biases 0, as the public code's ``init_weights``."""

    def __init__(self, input_dim: int, num_layers: int, config: RamerConfig):
        super().__init__()
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_proj = nn.Linear(input_dim, config.hidden_size)
        self.position = nn.Embedding(config.max_positions, config.hidden_size)
        self.embedding_norm = nn.LayerNorm(config.hidden_size)
        self.dropout = Dropout(config.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(config.hidden_size, config.num_heads, config.ffn_size, config.dropout) for _ in range(num_layers)
        )
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=config.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x [N, T, D], mask [N, T] True = valid; every row has at least one valid step
        positions = torch.arange(x.shape[1], device=x.device)
        h = self.dropout(self.embedding_norm(self.input_proj(self.input_norm(x)) + self.position(positions)))  # [N, T, H]
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
    """Personality with modality-level attention over a multi-party moment.

    The personality vector is encoded (LayerNorm -> Linear) and concatenated to every (character,
    segment) token of its character, as the public code does (``cat([inp_V, inp_P])``), then
    projected back to H per modality: token = W_m [U; E_p] + b_m (absent personality: E_p = 0, never
    invented). Inter-personal attention runs across the characters of each segment, then
    intra-personal attention lets the target segment attend over the target character's segments.
    Only cells that exist (``RamerBatch.exists``) and hold the modality or a known personality are
    keys. The result replaces U for present modalities and, for a missing one, adds what the moment
    and the personality say about it to the prototype stand-in.
    """

    def __init__(self, config: RamerConfig):
        super().__init__()
        h = config.hidden_size
        self.embed = nn.Sequential(nn.LayerNorm(config.personality_dim), nn.Linear(config.personality_dim, h))
        self.fuse = nn.ModuleList(nn.Linear(2 * h, h) for _ in MODALITIES)
        self.inter = nn.ModuleList(MaskedAttention(h, config.num_heads, config.dropout) for _ in MODALITIES)
        self.intra = nn.ModuleList(MaskedAttention(h, config.num_heads, config.dropout) for _ in MODALITIES)

    def forward(
        self,
        units: list[torch.Tensor],        # per modality [B, P, S, C, H], zeros where absent
        present: torch.Tensor,            # [B, P, S, 3] bool
        exists: torch.Tensor,             # [B, P, S] bool, real cells (False = collate padding)
        personality: torch.Tensor | None,  # [B, P, Dp]
        personality_present: torch.Tensor | None,  # [B, P] bool
        target_person: torch.Tensor,      # [B]
        target_segment: torch.Tensor,     # [B]
    ) -> torch.Tensor:
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
        embedding = embedding.to(units[0].dtype)
        contexts = []
        for m in range(NUM_MODALITIES):
            with_personality = torch.cat([units[m], embedding[:, :, None, None, :].expand_as(units[m])], dim=-1)
            tokens = self.fuse[m](with_personality)                                 # [B, P, S, C, H]
            valid = exists & (present[..., m] | known[:, :, None])                  # [B, P, S]
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
        return torch.stack(contexts, dim=1)                                         # [B, 3, C, H]


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
        self.aggregator = nn.Sequential(nn.Linear(c * h, h), nn.ReLU(), nn.Linear(h, c))  # MLLinear: no dropout

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

    def save_pretrained(self, directory, card: dict | None = None, companions: dict | None = None) -> None:
        from ramer_core.checkpoint import save_pretrained

        save_pretrained(self, directory, card, companions)

    @classmethod
    def from_pretrained(cls, directory, map_location=None) -> RamerModel:
        from ramer_core.checkpoint import from_pretrained

        return from_pretrained(directory, map_location)

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, batch: RamerBatch) -> RamerOutput:
        """Scores and the representations the losses need; changes no state (queue, prototypes and
        shuffle step move only in :meth:`update_state`)."""
        config = self.config
        self._check(batch)
        b = batch.batch_size
        batch_index = torch.arange(b, device=batch.text.device)
        target_person, target_segment = batch.target_person.long(), batch.target_segment.long()
        exists = batch.cell_exists()                                                            # [B, P, S]
        # present = a real cell, flagged present and with at least one valid time step; [B, P, S, 3]
        present_all = batch.present.bool() & exists[..., None] & torch.stack(
            [batch.mask(m).any(dim=-1) for m in MODALITIES], dim=-1)
        present = present_all[batch_index, target_person, target_segment]  # [B, 3]

        # 1. per-modality encoders + label attention -> U_m [B, C, H] (zeros where absent)
        context = None
        if self.personality is not None:
            units_all = [self._encode_units(m, batch.features(name), batch.mask(name), present_all[..., m])
                         for m, name in enumerate(MODALITIES)]                                   # [B, P, S, C, H]
            context = self.personality(units_all, present_all, exists, batch.personality, batch.personality_present,
                                       target_person, target_segment)                           # [B, 3, C, H]
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
        parts = RamerParts(units=units, recon=recon, pad=pad, aug=aug, beta=beta, latents=latents, present=present,
                           beta_valid=beta_valid, clf_beta=clf_beta, any_valid=any_valid, agg_logits=agg_logits)
        return RamerOutput(probs=probs, logits=torch.logit(probs, eps=eps), modalities_used=present, parts=parts)

    def loss(self, output: RamerOutput, labels: torch.Tensor) -> RamerLoss:
        """The weighted training objective of one forward pass (``labels`` [B, C] multi-hot):

            total = w_clf_u clf_u + w_clf_beta clf_beta + w_aggregator aggregator
                  + w_clf_aug clf_aug + w_aug_mse aug_mse + w_beta_mse beta_mse      (cross-modal)
                  + w_recon_mse recon_mse                                             (reconstruction)
                  + w_shuffle shuffle                                                 (stack shuffle)
                  + w_adversarial adversarial + w_orthogonality orthogonality
                  + w_common_clf common_clf                                           (adversarial)
                  + w_supcon supcon                                                   (contrastive)

        A term whose part is switched off or whose weight is 0 is left out (not computed). Reads the
        queue, prototypes and shuffle step, changes none of them."""
        config = self.config
        parts = output.parts
        if parts is None:
            raise RamerInputError("RamerModel.loss needs the output of RamerModel.forward (with its parts)")
        if labels.shape != output.probs.shape:
            raise RamerInputError(f"labels have shape {tuple(labels.shape)}; expected {tuple(output.probs.shape)} "
                                  f"multi-hot for labels {list(config.label_names)}")
        labels = labels.to(output.probs.dtype)
        units, present, beta, beta_valid = parts.units, parts.present, parts.beta, parts.beta_valid
        # detached targets: U should be reconstructed, not shrunk to be easy to reconstruct
        targets = units.detach() if config.detach_reconstruction_targets else units
        weights = {
            "clf_u": config.weight_clf_u, "clf_beta": config.weight_clf_beta, "aggregator": config.weight_aggregator,
            "clf_aug": config.weight_clf_aug if config.use_cross_modal else 0.0,
            "aug_mse": config.weight_aug_mse if config.use_cross_modal else 0.0,
            "beta_mse": config.weight_beta_mse if config.use_cross_modal else 0.0,
            "recon_mse": config.weight_recon_mse if config.use_reconstruction else 0.0,
            "shuffle": config.weight_shuffle if config.use_stack_shuffle else 0.0,
            "adversarial": config.weight_adversarial if config.use_adversarial else 0.0,
            "orthogonality": config.weight_orthogonality if config.use_adversarial else 0.0,
            "common_clf": config.weight_common_clf if config.use_adversarial else 0.0,
            "supcon": config.weight_supcon if config.use_contrastive else 0.0,
        }
        wanted = {name for name, weight in weights.items() if weight != 0.0}
        raw: dict[str, torch.Tensor] = {}
        if "clf_u" in wanted:
            clf_units, any_present = self._max_over_modalities(self._classify(units), present)
            raw["clf_u"] = masked_bce_with_logits(clf_units, labels, any_present[:, None])
        if "clf_beta" in wanted:
            raw["clf_beta"] = masked_bce_with_logits(parts.clf_beta, labels, parts.any_valid[:, None])
        if "aggregator" in wanted:
            raw["aggregator"] = masked_bce_with_logits(
                parts.agg_logits, labels[:, None].expand_as(parts.agg_logits), beta_valid[:, :, None])
        if "clf_aug" in wanted:
            raw["clf_aug"] = masked_bce_with_logits(self._classify(parts.aug).amax(dim=1), labels)
        if "aug_mse" in wanted:
            raw["aug_mse"] = sum_over_modalities(masked_mse, parts.aug, targets, present)
        if "beta_mse" in wanted:
            raw["beta_mse"] = sum_over_modalities(masked_mse, beta, targets, present)
        if "recon_mse" in wanted:
            raw["recon_mse"] = sum_over_modalities(masked_mse, parts.recon, targets, present)
        if "shuffle" in wanted:
            raw["shuffle"] = self._shuffle_loss(beta, beta_valid, labels)
        if wanted & {"adversarial", "orthogonality", "common_clf"}:
            raw.update(self._adversarial_losses(units, beta, present, beta_valid, labels))
        if "supcon" in wanted:
            anchors, anchor_ids = self._contrastive_views(parts, labels)
            parts.contrastive_views = (anchors.detach(), anchor_ids)  # enqueued by update_state()
            count = int(self.queue_count)
            raw["supcon"] = self.contrastive_loss(anchors, anchor_ids, self.queue[:count], self.queue_ids[:count],
                                                  config.temperature)
        terms = {name: weights[name] * raw[name] for name in weights if name in wanted}
        total = torch.stack(list(terms.values())).sum() if terms else output.probs.sum() * 0.0
        return RamerLoss(total=total, terms=terms)

    @torch.no_grad()
    def update_state(self, output: RamerOutput, labels: torch.Tensor) -> None:
        """After a successful optimiser step: enqueue the step's contrastive views (as :meth:`loss`
        computed them), fold its latents into the prototypes, advance the stack-shuffle step. Non-finite
        features are not stored (they would poison every later step)."""
        parts = output.parts
        if parts is None:
            raise RamerInputError("RamerModel.update_state needs the output of RamerModel.forward")
        if self.config.use_contrastive and parts.contrastive_views is not None:
            anchors, anchor_ids = parts.contrastive_views
            if bool(torch.isfinite(anchors).all()):
                self._enqueue(anchors, anchor_ids)
        if self.config.use_reconstruction and parts.latents is not None and bool(torch.isfinite(parts.latents).all()):
            self._update_prototypes(parts.latents.detach(), parts.present, labels.to(parts.latents.dtype))
        self.shuffle_state[1] += 1

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
        prototypes = self.prototypes.to(latents.dtype, copy=True)  # snapshot: update_state() changes them in place
        normalized = F.normalize(latents, dim=-1)                                               # [B, 3, C, d]
        similarity = torch.einsum("bmcd,mcnd->bmcn", normalized, prototypes)
        positive = (similarity / self.config.prototype_temperature).softmax(dim=-1)[..., 0]     # [B, 3, C]
        vote = masked_mean_over_modalities(positive, present, empty_value=0.5)                  # [B, C]
        if self.config.prototype_hard_at_eval and not self.training:
            # the public code picks the closer prototype at evaluation (mixes only in training)
            vote = torch.where(vote > 0.5, 1.0, torch.where(vote < 0.5, 0.0, 0.5)).to(vote.dtype)
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

    def _adversarial_losses(self, units, beta, present, beta_valid, labels) -> dict[str, torch.Tensor]:
        private = [self.private_extractors[m](units[:, m]) for m in range(NUM_MODALITIES)]   # [B, C, H] each
        common = [self.common_extractor(beta[:, m]) for m in range(NUM_MODALITIES)]
        # discriminator learns modality from private features; through the reversal it is fooled by common
        adversarial = sum(
            masked_cross_entropy(self.discriminator(private[m]), m, present[:, m, None])
            + masked_cross_entropy(self.discriminator(reverse_gradient(common[m])), m, beta_valid[:, m, None])
            for m in range(NUM_MODALITIES)
        )
        pairs = [(0, 1), (0, 2), (1, 2)]
        orthogonality = sum(
            orthogonality_loss(private[i], private[j], present[:, i] & present[:, j]) for i, j in pairs
        ) + sum(orthogonality_loss(common[m], private[m], present[:, m]) for m in range(NUM_MODALITIES))
        common_feature = sum(common[m] * beta_valid[:, m, None, None] for m in range(NUM_MODALITIES))  # [B, C, H]
        common_logits = torch.einsum("bch,ch->bc", common_feature, self.common_weight) + self.common_bias
        return {"adversarial": adversarial, "orthogonality": orthogonality,
                "common_clf": masked_bce_with_logits(common_logits, labels)}

    def _contrastive_views(self, parts: RamerParts, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The 9 views {U, aug, beta} x modality as normalised latents [N, d] with class id [N]
        (modality, label, label on/off): id = (2 m + off) C + c, the public code's ``get_cl_labels``.
        Views of absent modalities' U are left out. Rows are ordered view, sample, modality, label."""
        c = self.config.num_labels
        present, beta_valid = parts.present, parts.beta_valid
        views = [(parts.latents if parts.latents is not None else self._project(parts.units), present)]
        if parts.aug is not None:
            views += [(self._project(parts.aug), torch.ones_like(present)), (self._project(parts.beta), beta_valid)]
        else:  # without cross-modal reconstruction beta is U itself where present: add only the filled ones
            views += [(self._project(parts.beta), beta_valid & ~present)]
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
        if batch.exists is not None and batch.exists.shape != batch.present.shape[:3]:
            raise RamerInputError(f"RamerBatch.exists has shape {tuple(batch.exists.shape)}; expected [B, P, S] = "
                                  f"{tuple(batch.present.shape[:3])}")
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


__all__ = ["RamerLoss", "RamerModel", "RamerOutput", "RamerParts", "masked_mean", "masked_mean_over_modalities"]
