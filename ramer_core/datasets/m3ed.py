"""M3ED (Zhao et al., ACL 2022): the DialogueRNN-layout feature pickle, or CARAT's converted ``.pt``.

The pickle holds a 10-item tuple/list (9 without a validation split)::

    (videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence,
     trainVid, valVid, testVid)

as CARAT's ``utils/m3ed_reader.py`` reads it: items 7, 8, 9 are the train, validation and test
dialogue ids (a 9-item file has train, test and a seeded 10 % of train becomes validation). The
first seven are dicts keyed by dialogue id: ``videoLabels[d]`` holds one label index (or a list of
them) per utterance; ``videoText/Audio/Visual[d]`` one feature vector per utterance.

Sample unit, as in the published tables (CARAT, RAMer): **one sample is a whole dialogue**, its
utterances as the time axis cut to the first ``max_utterances`` = 60, its labels the union of its
utterances' labels (``unit="utterance"`` gives one sample per utterance instead, T = 1). Labels in
CARAT's order (its tokens 4..10): Happy, Neutral, Sad, Disgust, Anger, Fear, Surprise
(:data:`M3ED_LABELS`). Every modality is present (every utterance has its speaker's voice, words
and face track); P = S = 1.

CARAT's converted ``m3ed_data_60.pt`` (``torch.save`` of {"train", "valid", "test"} splits with
``src-text`` [N, 60, 768], ``src-visual``, ``src-audio``, ``len_list`` and ``tgt`` token lists,
tokens 4..10 = the 7 labels) is read as CMU-MOSEI's layout is, with ``len_list`` masking the padded
utterances. Note: CARAT's converter fills ``src-visual`` from pickle item 4 (named videoAudio in
M3ED's own layout, 1024-d) and ``src-audio`` from item 5 (videoVisual, 342-d); the ``.pt`` is read
as its keys say (so CARAT's per-modality layer counts apply to the same tensors as in its runs), the
pickle by M3ED's names.

The pickle is read with a restricted unpickler: only builtin containers, numpy arrays and numpy
scalars; anything else (which could run code) is refused with a RamerInputError.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ramer_core.datasets.common import DatasetSplits, FeatureDims, RamerDataset, RamerSample, check_file
from ramer_core.errors import RamerInputError

log = logging.getLogger(__name__)

M3ED_LABELS = ("happy", "neutral", "sad", "disgust", "anger", "fear", "surprise")  # CARAT tokens 4..10
FIELDS = ("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoVisual", "videoSentence",
          "trainVid", "valVid", "testVid")
MAX_UTTERANCES = 60  # CARAT cuts every dialogue to its first 60 utterances

_ALLOWED = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "list"), ("builtins", "dict"),
    ("builtins", "tuple"), ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    """Resolves only plain containers and numpy arrays, so loading the file runs no foreign code."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or (module.startswith("numpy") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_data_pickle(path: Path, what: str):
    """Unpickle ``path`` allowing containers and numpy arrays only; RamerInputError otherwise."""
    try:
        with open(path, "rb") as handle:
            return _DataOnlyUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise RamerInputError(f"{path}: {what} holds objects beyond lists, dicts and numpy arrays ({error}); "
                              f"re-save it with plain data only") from None
    except (EOFError, OSError, ValueError, TypeError, AttributeError, ImportError) as error:
        raise RamerInputError(f"{path}: not a readable pickle for a {what} ({error})") from None


def _utterance_labels(entry, count: int, label_names: Sequence[str], where: str) -> torch.Tensor:
    labels = torch.zeros(count)
    indices = [entry] if np.ndim(entry) == 0 else list(entry)
    for index in indices:
        try:
            index = int(index)
        except (TypeError, ValueError):
            raise RamerInputError(f"{where}: label {index!r} is not an integer index") from None
        if not 0 <= index < count:
            raise RamerInputError(f"{where}: label index {index} outside 0..{count - 1} ({', '.join(label_names)})")
        labels[index] = 1.0
    return labels


def _features(value, utterances: int, where: str) -> torch.Tensor:
    try:
        array = torch.as_tensor(np.asarray([np.asarray(v, dtype=np.float32).reshape(-1) for v in value]))
    except (TypeError, ValueError) as error:
        raise RamerInputError(f"{where}: features are not one numeric vector per utterance ({error})") from None
    if array.ndim != 2 or array.shape[0] != utterances:
        raise RamerInputError(f"{where}: expected {utterances} feature vectors, found shape {tuple(array.shape)}")
    return torch.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)


def load_m3ed(path: str | Path, label_names: Sequence[str] = M3ED_LABELS, valid_fraction: float = 0.1,
              seed: int = 42, unit: str = "dialogue", max_utterances: int = MAX_UTTERANCES) -> DatasetSplits:
    """Read M3ED: a ``.pt`` file is CARAT's converted layout, anything else the feature pickle."""
    path = check_file(path, "M3ED feature file")
    if path.suffix == ".pt":
        return load_m3ed_converted(path)
    if unit not in ("dialogue", "utterance"):
        raise RamerInputError(f"M3ED sample unit must be dialogue or utterance, not {unit!r}")
    raw = load_data_pickle(path, "M3ED feature pickle")
    if not isinstance(raw, (list, tuple)) or len(raw) not in (9, 10):
        raise RamerInputError(f"{path}: expected a 9- or 10-item tuple ({', '.join(FIELDS)}; 9 items: no valVid), "
                              f"found {type(raw).__name__} of length {len(raw) if hasattr(raw, '__len__') else '?'}")
    names = FIELDS if len(raw) == 10 else (*FIELDS[:8], "testVid")
    fields = dict(zip(names, raw, strict=True))
    for name in FIELDS[:6]:
        if not isinstance(fields[name], dict):
            raise RamerInputError(f"{path}: {name} should be a dict keyed by dialogue id, "
                                  f"found {type(fields[name]).__name__}")
    label_names = tuple(label_names)
    dims: dict[str, int] = {}

    def build(dialogues: Sequence, split: str) -> list[RamerSample]:
        samples = []
        for dialogue in dialogues:
            if dialogue not in fields["videoLabels"]:
                raise RamerInputError(f"{path}: {split} dialogue {dialogue!r} has no videoLabels entry")
            labels = list(fields["videoLabels"][dialogue])
            where = f"{path} dialogue {dialogue!r}"
            per_modality = {}
            for modality, name in (("text", "videoText"), ("acoustic", "videoAudio"), ("visual", "videoVisual")):
                if dialogue not in fields[name]:
                    raise RamerInputError(f"{where}: missing from {name}")
                per_modality[modality] = _features(fields[name][dialogue], len(labels), f"{where} {name}")
                size = per_modality[modality].shape[1]
                if dims.setdefault(modality, size) != size:
                    raise RamerInputError(f"{where}: {name} vectors have {size} values, others {dims[modality]}")
            utterance_labels = [_utterance_labels(entry, len(label_names), label_names, f"{where} utterance {u}")
                                for u, entry in enumerate(labels)]
            if unit == "dialogue":
                # CARAT: the whole dialogue labels (union over all its utterances), features cut to 60
                union = torch.stack(utterance_labels).amax(dim=0) if utterance_labels else torch.zeros(len(label_names))
                cut = {m: x[:max_utterances] for m, x in per_modality.items()}
                samples.append(RamerSample.single(cut["text"], cut["visual"], cut["acoustic"], labels=union,
                                                  present=(True, True, True), key=str(dialogue)))
                continue
            for u, target in enumerate(utterance_labels):
                samples.append(RamerSample.single(
                    per_modality["text"][u:u + 1], per_modality["visual"][u:u + 1], per_modality["acoustic"][u:u + 1],
                    labels=target, present=(True, True, True), key=f"{dialogue}:{u}"))
        return samples

    def ids(name: str) -> list:
        value = fields.get(name)
        try:
            return sorted(value, key=str)
        except TypeError:
            raise RamerInputError(f"{path}: {name} is not a collection of dialogue ids") from None

    train_ids, test_ids = ids("trainVid"), ids("testVid")
    if fields.get("valVid") is not None:
        valid_ids = ids("valVid")
    else:
        order = np.random.RandomState(seed).permutation(len(train_ids))
        n_valid = int(len(train_ids) * valid_fraction)
        valid_ids = [train_ids[i] for i in sorted(order[:n_valid])]
        train_ids = [train_ids[i] for i in sorted(order[n_valid:])]
    built = {"train": build(train_ids, "train"), "valid": build(valid_ids, "valid"), "test": build(test_ids, "test")}
    feature_dims = FeatureDims(dims.get("text", 0), dims.get("visual", 0), dims.get("acoustic", 0))
    splits = {k: RamerDataset(v, label_names, feature_dims, name=f"m3ed:{k}", source=str(path))
              for k, v in built.items()}
    log.info("read M3ED (%s samples) from %s: %s", unit, path, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return DatasetSplits(**splits)


def load_m3ed_converted(path: str | Path) -> DatasetSplits:
    """CARAT's converted M3ED ``.pt`` (MOSEI layout, 7 labels as tokens 4..10, ``len_list`` lengths)."""
    from ramer_core.datasets.mosei import load_token_layout

    return load_token_layout(path, M3ED_LABELS, "m3ed", "M3ED converted file (m3ed_data_60.pt)")
