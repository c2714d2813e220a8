"""What every reader returns: samples of (persons x segments x time) features, and their collation.

A :class:`RamerSample` is one target to score, in the layout of :class:`ramer_core.batch.RamerBatch`
without the batch axis. :func:`collate` pads samples to a common number of persons, segments and
time steps and returns a RamerBatch. An empty modality (a non-speaker's acoustic and text) is a
``(P, S, 0, D)`` tensor with ``present`` False; padding is never marked valid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ramer_core.batch import MODALITIES, RamerBatch
from ramer_core.errors import RamerInputError

log = logging.getLogger(__name__)


@dataclass
class RamerSample:
    text: torch.Tensor            # [P, S, Tt, Dt]
    visual: torch.Tensor          # [P, S, Tv, Dv]
    acoustic: torch.Tensor        # [P, S, Ta, Da]
    text_mask: torch.Tensor       # [P, S, Tt] bool
    visual_mask: torch.Tensor     # [P, S, Tv] bool
    acoustic_mask: torch.Tensor   # [P, S, Ta] bool
    present: torch.Tensor         # [P, S, 3] bool (order of MODALITIES)
    labels: torch.Tensor | None   # [C] float multi-hot, None when unlabelled
    target_person: int = 0
    target_segment: int = 0
    personality: torch.Tensor | None = None          # [P, Dp]
    personality_present: torch.Tensor | None = None  # [P] bool
    key: str = ""                                    # where the sample came from (id in its file)

    @classmethod
    def single(
        cls,
        text: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor,  # [T_m, D_m] each, T_m may be 0
        labels: torch.Tensor | None = None,
        present: Sequence[bool] | None = None,
        personality: torch.Tensor | None = None,                           # [Dp]
        key: str = "",
    ) -> RamerSample:
        """One person, one segment. A modality is present when it has time steps unless ``present`` says."""
        seqs = {"text": text, "visual": visual, "acoustic": acoustic}
        if present is None:
            present = [seqs[m].shape[0] > 0 for m in MODALITIES]
        lift = lambda x: x[None, None]  # noqa: E731  [T, D] -> [1, 1, T, D]
        masks = {m: torch.ones(1, 1, seqs[m].shape[0], dtype=torch.bool) for m in MODALITIES}
        for m, flag in zip(MODALITIES, present, strict=True):
            if not flag:
                masks[m][:] = False
        return cls(
            text=lift(text.float()), visual=lift(visual.float()), acoustic=lift(acoustic.float()),
            text_mask=masks["text"], visual_mask=masks["visual"], acoustic_mask=masks["acoustic"],
            present=torch.tensor([[list(map(bool, present))]], dtype=torch.bool),
            labels=None if labels is None else labels.float(),
            personality=None if personality is None else personality.float()[None],
            personality_present=None if personality is None else torch.ones(1, dtype=torch.bool),
            key=key,
        )

    def features(self, modality: str) -> torch.Tensor:
        return getattr(self, modality)

    def mask(self, modality: str) -> torch.Tensor:
        return getattr(self, f"{modality}_mask")

    @property
    def missing_acoustic_and_text(self) -> bool:
        """True when the target (person, segment) has neither acoustic nor text (a non-speaker)."""
        flags = self.present[self.target_person, self.target_segment]
        return not bool(flags[MODALITIES.index("acoustic")]) and not bool(flags[MODALITIES.index("text")])


@dataclass
class FeatureDims:
    text: int
    visual: int
    acoustic: int
    personality: int = 0  # 0 = the dataset has no personality vectors

    def serialize(self) -> dict:
        return {"text": self.text, "visual": self.visual, "acoustic": self.acoustic,
                "personality": self.personality}


class RamerDataset(Dataset):
    """A list of samples with the label names and feature dimensions they share."""

    def __init__(self, samples: Sequence[RamerSample], label_names: Sequence[str], dims: FeatureDims,
                 name: str = "", source: str = "") -> None:
        self.samples = list(samples)
        self.label_names = tuple(label_names)
        self.dims = dims
        self.name = name          # e.g. "mosei-aligned:train"
        self.source = source      # the file or folder it was read from

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> RamerSample:
        return self.samples[index]

    @property
    def labelled(self) -> bool:
        return all(s.labels is not None for s in self.samples)

    def labels_matrix(self) -> torch.Tensor:
        """[N, C] float multi-hot of every sample (all must be labelled)."""
        if not self.labelled:
            raise RamerInputError(f"{self.source or self.name}: some samples have no labels")
        if not self.samples:
            return torch.zeros(0, len(self.label_names))
        return torch.stack([s.labels for s in self.samples])

    def missing_acoustic_and_text(self) -> torch.Tensor:
        """[N] bool, True for samples whose target lacks acoustic and text (non-speakers)."""
        return torch.tensor([s.missing_acoustic_and_text for s in self.samples], dtype=torch.bool)

    def subset(self, indices: Sequence[int], name: str | None = None) -> RamerDataset:
        return RamerDataset([self.samples[i] for i in indices], self.label_names, self.dims,
                            name or self.name, self.source)

    def describe(self) -> dict:
        """A short summary for the model card."""
        summary = {"name": self.name, "source": self.source, "samples": len(self),
                   "labels": list(self.label_names), "dims": self.dims.serialize()}
        if self.samples and self.labelled:
            summary["label_counts"] = [int(c) for c in self.labels_matrix().sum(0).tolist()]
        summary["missing_acoustic_and_text"] = int(self.missing_acoustic_and_text().sum()) if self.samples else 0
        return summary


@dataclass
class DatasetSplits:
    """The train / valid / test splits of one benchmark (a split may be empty)."""

    train: RamerDataset
    valid: RamerDataset
    test: RamerDataset
    label_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.label_names:
            self.label_names = self.train.label_names

    def split(self, name: str) -> RamerDataset:
        aliases = {"train": self.train, "valid": self.valid, "val": self.valid, "dev": self.valid,
                   "test": self.test}
        if name not in aliases:
            raise RamerInputError(f"unknown split {name!r}; use train, valid or test")
        return aliases[name]


def _pad_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Zero-pad ``x`` at the end of every axis up to ``shape``."""
    out = x.new_zeros(tuple(shape))
    out[tuple(slice(0, n) for n in x.shape)] = x
    return out


def collate(samples: Sequence[RamerSample]) -> RamerBatch:
    """Pad persons, segments and time steps to the batch maximum and stack into a RamerBatch.

    Time is padded to at least one step so a batch where nobody speaks still has a (fully
    masked) acoustic and text axis.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    persons = max(s.present.shape[0] for s in samples)
    segments = max(s.present.shape[1] for s in samples)
    stacked: dict[str, torch.Tensor] = {}
    for m in MODALITIES:
        steps = max(1, max(s.features(m).shape[2] for s in samples))
        dim = samples[0].features(m).shape[3]
        for s in samples:
            if s.features(m).shape[3] != dim:
                raise RamerInputError(f"{m} feature size differs inside one batch ({s.key or 'sample'}: "
                                      f"{s.features(m).shape[3]} vs {dim})")
        stacked[m] = torch.stack([_pad_to(s.features(m), (persons, segments, steps, dim)) for s in samples])
        stacked[f"{m}_mask"] = torch.stack([_pad_to(s.mask(m), (persons, segments, steps)) for s in samples])
    present = torch.stack([_pad_to(s.present, (persons, segments, 3)) for s in samples])
    # A padded time step is never valid, and an absent modality has no valid step.
    for i, m in enumerate(MODALITIES):
        stacked[f"{m}_mask"] &= present[..., i, None]
    personality = personality_present = None
    if any(s.personality is not None for s in samples):
        dim = next(s.personality for s in samples if s.personality is not None).shape[-1]
        personality = torch.stack([
            _pad_to(s.personality, (persons, dim)) if s.personality is not None else torch.zeros(persons, dim)
            for s in samples])
        personality_present = torch.stack([
            _pad_to(s.personality_present, (persons,)) if s.personality_present is not None
            else torch.zeros(persons, dtype=torch.bool) for s in samples])
    labels = None
    if all(s.labels is not None for s in samples):
        labels = torch.stack([s.labels for s in samples])
    # the cells each sample really has; the padding persons and segments are marked False
    exists = torch.stack([_pad_to(torch.ones(s.present.shape[:2], dtype=torch.bool), (persons, segments))
                          for s in samples])
    return RamerBatch(
        text=stacked["text"], visual=stacked["visual"], acoustic=stacked["acoustic"],
        text_mask=stacked["text_mask"], visual_mask=stacked["visual_mask"],
        acoustic_mask=stacked["acoustic_mask"], present=present,
        target_person=torch.tensor([s.target_person for s in samples], dtype=torch.long),
        target_segment=torch.tensor([s.target_segment for s in samples], dtype=torch.long),
        personality=personality, personality_present=personality_present, labels=labels, exists=exists,
    )


def check_file(path: str | Path, what: str) -> Path:
    """The path as a Path, or a RamerInputError naming it when it is not an existing file."""
    path = Path(path)
    if not path.is_file():
        raise RamerInputError(f"{what} not found: {path} (give the path to the downloaded file)")
    return path
