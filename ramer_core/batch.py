"""The one input type of the RAMer model: padded modality sequences with masks.

A *sample* is one target (character, segment) to score. Multi-person moments (MEmoR) carry every
character in the moment (P persons) and each character's segments (S segments); the target is
``(target_person, target_segment)``. Single-person datasets (CMU-MOSEI, M3ED, the video pipeline)
use P = S = 1 through :meth:`RamerBatch.single`.

Absent inputs are *empty*, not zeros pretending to be data: a modality whose ``present`` flag is
False contributes nothing to the output, whatever its tensor holds. ``exists`` marks the (person,
segment) cells a sample really has; :func:`~ramer_core.datasets.collate` pads persons and segments to
the batch maximum and marks the padding False, so a sample scores the same whatever it is batched
with (a padded cell is never an attention key, even where the person's personality is known).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

MODALITIES = ("text", "visual", "acoustic")


@dataclass
class RamerBatch:
    text: torch.Tensor            # [B, P, S, Tt, Dt] float
    visual: torch.Tensor          # [B, P, S, Tv, Dv] float
    acoustic: torch.Tensor        # [B, P, S, Ta, Da] float
    text_mask: torch.Tensor       # [B, P, S, Tt] bool, True = valid time step
    visual_mask: torch.Tensor     # [B, P, S, Tv] bool
    acoustic_mask: torch.Tensor   # [B, P, S, Ta] bool
    present: torch.Tensor         # [B, P, S, 3] bool, modality present (order of MODALITIES)
    target_person: torch.Tensor   # [B] long, index into P of the character being scored
    target_segment: torch.Tensor  # [B] long, index into S of the segment being scored
    personality: torch.Tensor | None = None          # [B, P, Dp] float, or None when no dataset has it
    personality_present: torch.Tensor | None = None  # [B, P] bool
    labels: torch.Tensor | None = None                # [B, C] float multi-hot (training/evaluation)
    exists: torch.Tensor | None = None                # [B, P, S] bool, real (person, segment) cell; None = all

    def cell_exists(self) -> torch.Tensor:
        """[B, P, S] bool: ``exists``, or every cell when the batch was built without padding."""
        if self.exists is not None:
            return self.exists.bool()
        return torch.ones(self.present.shape[:3], dtype=torch.bool, device=self.present.device)

    @property
    def batch_size(self) -> int:
        return self.text.shape[0]

    def features(self, modality: str) -> torch.Tensor:
        return getattr(self, modality)

    def mask(self, modality: str) -> torch.Tensor:
        return getattr(self, f"{modality}_mask")

    def to(self, device: torch.device | str) -> RamerBatch:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        return replace(self, **moved)

    @classmethod
    def single(
        cls,
        text: torch.Tensor,           # [B, Tt, Dt]
        visual: torch.Tensor,         # [B, Tv, Dv]
        acoustic: torch.Tensor,       # [B, Ta, Da]
        text_mask: torch.Tensor,      # [B, Tt]
        visual_mask: torch.Tensor,    # [B, Tv]
        acoustic_mask: torch.Tensor,  # [B, Ta]
        present: torch.Tensor,        # [B, 3]
        labels: torch.Tensor | None = None,            # [B, C]
        personality: torch.Tensor | None = None,       # [B, Dp]
        personality_present: torch.Tensor | None = None,  # [B]
    ) -> RamerBatch:
        """A batch of one person and one segment per sample (P = S = 1)."""
        b = text.shape[0]
        lift = lambda x: None if x is None else x[:, None, None]  # noqa: E731  [B, ...] -> [B, 1, 1, ...]
        zeros = torch.zeros(b, dtype=torch.long, device=text.device)
        return cls(
            text=lift(text), visual=lift(visual), acoustic=lift(acoustic),
            text_mask=lift(text_mask), visual_mask=lift(visual_mask), acoustic_mask=lift(acoustic_mask),
            present=lift(present), target_person=zeros, target_segment=zeros.clone(),
            personality=None if personality is None else personality[:, None],
            personality_present=None if personality_present is None else personality_present[:, None],
            labels=labels, exists=torch.ones(b, 1, 1, dtype=torch.bool, device=text.device),
        )
