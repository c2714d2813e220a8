"""RAMer inference over moments: every character on screen in a moment is scored in one multi-person sample.

For a moment with P characters on screen, each character becomes the target of one sample that carries
all P characters (S = 1 segment), so the model's inter-personal attention sees the scene. Absent
modalities (a listener's voice and words) are empty with ``present`` False. The checkpoint must fit the
extractors (feature sizes) and say its labels; its card says which modalities it has trained evidence
for, and each timeline entry names the ones it used without such evidence.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from extractors.io import return_freed_memory
from extractors.moments import MODALITIES, ModalityInputs, Moment, MomentConfig, pool_frames, pool_time
from pipeline.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).with_name("default_model")


def checkpoint_digest(folder: Path, companions: tuple[Path, ...] = ()) -> str:
    """sha256 of the weights, the config and the companion files the checkpoint's inputs depend on."""
    digest = hashlib.sha256()
    for path in (folder / "config.json", folder / "model.safetensors", *companions):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class EmotionScorer:
    model: torch.nn.Module
    path: Path
    explicit: bool
    digest: str
    device: str
    # the tuned text-encoder blocks the checkpoint was trained over (its companion file; None: packaged MiniLM)
    text_tuned_layers: Path | None = None
    batch_size: int = 64       # samples per forward pass at most
    # ... and at most this many MiB of padded inputs: a batch pads every sample to its most crowded moment
    # and longest sequences (crowded scenes of an hour made transients of up to 136 MB, 33 MB capped; measured).
    batch_mib: float = 16.0

    @classmethod
    def load(cls, checkpoint: str | os.PathLike | None = None, device: str = "cpu") -> EmotionScorer:
        """The checkpoint at ``checkpoint``, or the project's default; checks it fits the extractors."""
        from ramer_core.checkpoint import from_pretrained

        explicit = checkpoint is not None
        path = Path(checkpoint) if explicit else DEFAULT_CHECKPOINT
        if not path.is_dir():
            if explicit:
                raise UserError(f"checkpoint {path} is not a folder; give a folder saved by `pipeline train` "
                                "(config.json + model.safetensors)")
            raise UserError(f"the default RAMer checkpoint is missing at {path}; reinstall the project or pass "
                            "--checkpoint DIR")
        model = from_pretrained(path, map_location=device)
        text_layers = tuned_text_layers(model, path)
        scorer = cls(model.eval(), path, explicit, checkpoint_digest(path, (text_layers,) if text_layers else ()),
                     device, text_layers)
        check_fits_extractors(model, path, scorer.acoustic_kind, scorer.visual_fill)
        return scorer

    # -------------------------------------------------------------------------------- properties

    @property
    def labels(self) -> list[str]:
        return list(self.model.config.label_names)

    @property
    def card(self) -> dict:
        return dict(getattr(self.model, "card", None) or {})

    @property
    def version(self) -> str:
        return str(self.card.get("version") or self.digest[:12])

    @property
    def thresholds(self) -> np.ndarray:
        per_label = self.card.get("thresholds")
        if per_label and len(per_label) == len(self.labels):
            return np.asarray(per_label, dtype=np.float64)
        return np.full(len(self.labels), float(self.model.config.threshold))

    # --- how the checkpoint's inputs were prepared in training (the pipeline prepares them the same way) ---

    @property
    def _extra(self) -> dict:
        return {**dict(getattr(self.model.config, "extra", None) or {}), **self.card}

    @property
    def acoustic_kind(self) -> str:
        """``librosa`` (47-d, 100 frames/s) or ``whisper`` (whisper-tiny.en encoder states, 50 frames/s)."""
        return str(self._extra.get("acoustic_features", "librosa"))

    @property
    def acoustic_whisper_blocks(self) -> int | None:
        """Whisper encoder blocks the ``whisper`` features were taken after (None: the whole encoder)."""
        blocks = self._extra.get("acoustic_whisper_blocks")
        return None if blocks is None else int(blocks)

    @property
    def acoustic_pool(self) -> int:
        return int(self._extra.get("acoustic_pool_frames", 1) or 1)

    @property
    def visual_fill(self) -> dict[str, float]:
        """Visual columns the checkpoint never saw measured, and the constant it saw instead."""
        return {str(k): float(v) for k, v in (self._extra.get("visual_fill") or {}).items()}

    def prepare(self, entry: ModalityInputs, limits: MomentConfig) -> ModalityInputs:
        """The sequences as the checkpoint saw them in training: fill, frame pooling, length caps."""
        from dataclasses import replace

        from extractors.visual_features import VISUAL_FEATURE_NAMES

        visual = entry.visual
        if self.visual_fill and len(visual):
            visual = visual.copy()
            for name, value in self.visual_fill.items():
                visual[:, VISUAL_FEATURE_NAMES.index(name)] = value
        acoustic = pool_frames(entry.acoustic, self.acoustic_pool)
        max_positions = int(self.model.config.max_positions)
        return replace(entry, visual=pool_time(visual, min(limits.max_visual_steps, max_positions)),
                       acoustic=pool_time(acoustic, min(limits.max_acoustic_steps, max_positions)),
                       text=entry.text[: min(limits.max_text_steps, max_positions)])

    @property
    def companions(self) -> dict[str, Path]:
        """Files that travel with the checkpoint when it is trained further and saved elsewhere."""
        return {self.text_tuned_layers.name: self.text_tuned_layers} if self.text_tuned_layers else {}

    @property
    def trained_modalities(self) -> list[str]:
        """Modalities the checkpoint has trained evidence for (its card's ``trained_modalities``; all three
        when a card written before that key existed does not say)."""
        listed = self.card.get("trained_modalities")
        if listed is None:
            return list(MODALITIES)
        return [m for m in MODALITIES if m in listed]

    def model_entry(self) -> dict:
        thresholds = self.thresholds
        same = bool(np.allclose(thresholds, thresholds[0]))
        return {"checkpoint": str(self.path), "labels": self.labels, "threshold": float(thresholds[0]) if same
                else float(self.model.config.threshold),
                "thresholds": None if same else dict(zip(self.labels, map(float, thresholds), strict=True)),
                "trained_modalities": self.trained_modalities, "card": self.card}

    # ----------------------------------------------------------------------------------- scoring

    def score(self, moments: list[Moment], inputs: Iterable[list[ModalityInputs]], limits: MomentConfig | None = None,
              progress: Callable[[float], None] | None = None) -> list[dict]:
        """Timeline entries (dicts of the timeline JSON), one per (moment, character on screen).

        ``inputs``: per moment, its characters' inputs (a list, or a generator that makes them as they are read).
        Samples are scored a batch at a time as they are made, so memory does not grow with the video's
        length; a batch takes at most :attr:`batch_size` samples and :attr:`batch_mib` of padded inputs, so it
        does not grow with a scene's crowd either. RAMer masks padding, so the probabilities do not depend
        on how the samples are batched.
        """
        limits = limits or MomentConfig()
        thresholds = self.thresholds
        trained = set(self.trained_modalities)
        out: list[dict] = []
        batch = PaddedBatch(self.model.config, self.batch_size, int(self.batch_mib * 2**20))
        targets = []

        def flush() -> None:
            probs = self._probs(batch.samples)
            for (moment, character, role, used), p in zip(targets, probs, strict=True):
                out.append({
                    "character": character, "start": round(moment.start, 3), "end": round(moment.end, 3),
                    "moment": moment.id, "segment": moment.segment, "role": role,
                    "modalities": used, "untrained_modalities": [m for m in used if m not in trained],
                    "probs": {label: round(float(v), 4) for label, v in zip(self.labels, p, strict=True)},
                    "labels": [label for label, v, t in zip(self.labels, p, thresholds, strict=True) if v >= t],
                })
            batch.clear()
            targets.clear()
            return_freed_memory()   # else the freed batches stay resident (+700 MB over an hour's scoring, measured)

        for done, (moment, raw) in enumerate(zip(moments, inputs, strict=True), start=1):
            entries = [self.prepare(entry, limits) for entry in raw]
            for entry, sample in zip(entries, moment_samples(entries, self.model.config), strict=True):
                if not batch.fits(sample):
                    flush()
                    if progress is not None:
                        progress((done - 1) / len(moments))
                batch.add(sample)
                targets.append((moment, entry.character, entry.role, entry.modalities))
        if batch.samples:
            flush()
        if progress is not None:
            progress(1.0)
        return out

    def _probs(self, samples: list) -> np.ndarray:
        """[N, C] probabilities of ``samples``."""
        from ramer_core.datasets.common import FeatureDims, RamerDataset
        from ramer_core.training import predict

        config = self.model.config
        dataset = RamerDataset(samples, self.labels, FeatureDims(config.text_dim, config.visual_dim,
                                                                 config.acoustic_dim, config.personality_dim),
                               name="pipeline")
        return predict(self.model, dataset, batch_size=self.batch_size, device=self.device).probs  # [N, C]


class PaddedBatch:
    """Samples gathered for one forward pass, and what collating them would pad them to."""

    def __init__(self, config, max_samples: int, max_bytes: int):
        self.dims = {m: int(getattr(config, f"{m}_dim")) for m in MODALITIES}
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.clear()

    def clear(self) -> None:
        self.samples: list = []
        self.persons = 0
        self.steps = dict.fromkeys(MODALITIES, 1)

    def padded_bytes(self, count: int, persons: int, steps: dict[str, int]) -> int:
        """float32 inputs of ``count`` samples padded to ``persons`` and ``steps`` (the masks are small)."""
        return 4 * count * persons * sum(steps[m] * self.dims[m] for m in MODALITIES)

    def fits(self, sample) -> bool:
        """Whether ``sample`` can join (an empty batch takes any one sample)."""
        if not self.samples:
            return True
        persons = max(self.persons, sample.present.shape[0])
        steps = {m: max(self.steps[m], sample.features(m).shape[2]) for m in MODALITIES}
        return (len(self.samples) < self.max_samples
                and self.padded_bytes(len(self.samples) + 1, persons, steps) <= self.max_bytes)

    def add(self, sample) -> None:
        self.samples.append(sample)
        self.persons = max(self.persons, sample.present.shape[0])
        for m in MODALITIES:
            self.steps[m] = max(self.steps[m], sample.features(m).shape[2])


def moment_samples(entries: list[ModalityInputs], config) -> list:
    """The RamerSamples of one moment, one per character as target (S = 1), all P characters in each.

    The P samples share their tensors (they differ only in the target), so a crowded moment does not
    hold P copies of its scene.
    """
    from ramer_core.datasets.common import RamerSample

    persons = len(entries)
    if not persons:   # nobody on screen: nothing to score
        return []
    tensors, masks = {}, {}
    for m in MODALITIES:
        dim = getattr(config, f"{m}_dim")
        steps = max(1, max(getattr(e, m).shape[0] for e in entries))
        x = torch.zeros(persons, 1, steps, dim)
        mask = torch.zeros(persons, 1, steps, dtype=torch.bool)
        for p, entry in enumerate(entries):
            seq = getattr(entry, m)
            if len(seq):
                x[p, 0, : len(seq)] = torch.from_numpy(np.ascontiguousarray(seq, dtype=np.float32))
                mask[p, 0, : len(seq)] = True
        tensors[m], masks[m] = x, mask
    present = torch.tensor([[list(e.present)] for e in entries], dtype=torch.bool)   # [P, 1, 3]
    personality = personality_present = None
    if config.personality_dim > 0:
        # a cast file's vectors feed the personality branch; a character without one is masked
        personality = torch.zeros(persons, config.personality_dim)
        personality_present = torch.zeros(persons, dtype=torch.bool)
        for p, entry in enumerate(entries):
            if entry.personality is not None and len(entry.personality) == config.personality_dim:
                personality[p] = torch.from_numpy(np.asarray(entry.personality, dtype=np.float32))
                personality_present[p] = True
    return [RamerSample(text=tensors["text"], visual=tensors["visual"], acoustic=tensors["acoustic"],
                        text_mask=masks["text"], visual_mask=masks["visual"], acoustic_mask=masks["acoustic"],
                        present=present, labels=None, target_person=target, target_segment=0,
                        personality=personality, personality_present=personality_present,
                        key=f"{entry.moment}/{entry.character}")
            for target, entry in enumerate(entries)]


def moment_sample(entries: list[ModalityInputs], target: int, config):
    """One RamerSample: the P characters of a moment (S = 1), scoring ``entries[target]``."""
    return moment_samples(entries, config)[target]


WHISPER_TINY_DIM = 384  # whisper-tiny.en encoder width (the acoustic_features "whisper" option)


def tuned_text_layers(model, path: Path) -> Path | None:
    """The checkpoint's tuned text blocks (config extra ``text_tuned_layers``, a file in its folder)."""
    name = (getattr(model.config, "extra", None) or {}).get("text_tuned_layers")
    if not name:
        return None
    if Path(name).name != name or not (path / name).is_file():
        raise UserError(f"checkpoint {path} was trained over tuned text layers {name!r}, which are not in its "
                        "folder; copy the whole checkpoint folder")
    return path / name


def check_fits_extractors(model, path: Path, acoustic_kind: str = "librosa", visual_fill: dict | None = None) -> None:
    """A checkpoint whose feature sizes differ from the extractors' cannot read their output."""
    from extractors.acoustic_features import D_ACOUSTIC
    from extractors.text_features import D_TEXT
    from extractors.visual_features import D_VISUAL, VISUAL_FEATURE_NAMES

    if acoustic_kind not in ("librosa", "whisper"):
        raise UserError(f"checkpoint {path} wants acoustic features {acoustic_kind!r}; this pipeline has librosa "
                        "and whisper")
    unknown = sorted(set(visual_fill or {}) - set(VISUAL_FEATURE_NAMES))
    if unknown:
        raise UserError(f"checkpoint {path} fills visual columns this pipeline does not have: {unknown}")
    config = model.config
    names = (getattr(config, "extra", None) or {}).get("visual_feature_names")
    if names is not None and tuple(names) != tuple(VISUAL_FEATURE_NAMES):
        raise UserError(f"checkpoint {path} was trained on visual columns {names}, the extractors give "
                        f"{list(VISUAL_FEATURE_NAMES)}; retrain it on the current features")
    expected = {"text": D_TEXT, "visual": D_VISUAL,
                "acoustic": D_ACOUSTIC if acoustic_kind == "librosa" else WHISPER_TINY_DIM}
    wrong = [f"{m} {getattr(config, f'{m}_dim')} (extractors give {d})" for m, d in expected.items()
             if getattr(config, f"{m}_dim") != d]
    if wrong:
        raise UserError(f"checkpoint {path} does not fit this pipeline's features: {', '.join(wrong)}; use a "
                        "checkpoint trained on pipeline features (the default one, or `pipeline train` on a "
                        "feature store)")
    if len(config.label_names) != config.num_labels or not config.label_names:
        raise UserError(f"checkpoint {path} has {config.num_labels} outputs but {len(config.label_names)} label names")
