"""M3ED reader on small pickles in the DialogueRNN layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ramer_core.datasets import load_m3ed
from ramer_core.datasets.m3ed import M3ED_LABELS
from ramer_core.errors import RamerInputError


def _features(rng, counts, dim, as_list):
    out = {}
    for dialogue, n in counts.items():
        array = rng.standard_normal((n, dim)).astype(np.float32)
        out[dialogue] = [row for row in array] if as_list else array
    return out


def _layout(with_val: bool):
    rng = np.random.default_rng(1)
    counts = {"d1": 2, "d2": 3, "d3": 1, "d4": 1}
    fields = [
        {d: [f"u{i}" for i in range(n)] for d, n in counts.items()},                 # videoIDs
        {d: ["A"] * n for d, n in counts.items()},                                   # videoSpeakers
        {"d1": [0, [1, 4]], "d2": [6, 6, 2], "d3": [np.int64(3)], "d4": [[5]]},     # videoLabels
        _features(rng, counts, 5, as_list=True),                                     # videoText
        _features(rng, counts, 4, as_list=False),                                    # videoAudio
        _features(rng, counts, 3, as_list=True),                                     # videoVisual
        {d: ["..."] * n for d, n in counts.items()},                                 # videoSentence
        {"d1", "d2"}, {"d3"},                                                        # trainVid, testVid
    ]
    if with_val:
        fields.append({"d4"})
    return tuple(fields)


def _write(tmp_path, obj, name="m3ed.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj))
    return path


def test_reads_utterances_with_multi_labels(tmp_path):
    raw = _layout(with_val=True)
    splits = load_m3ed(_write(tmp_path, raw))
    assert splits.label_names == M3ED_LABELS
    assert [len(splits.train), len(splits.valid), len(splits.test)] == [5, 1, 1]
    labels = splits.train.labels_matrix()
    assert labels[0].nonzero().flatten().tolist() == [0]
    assert labels[1].nonzero().flatten().tolist() == [1, 4]
    assert labels[2].nonzero().flatten().tolist() == [6]
    assert splits.valid.labels_matrix()[0].nonzero().flatten().tolist() == [5]
    first = splits.train[1]
    assert first.text.shape == (1, 1, 1, 5) and first.acoustic.shape == (1, 1, 1, 4)
    assert np.allclose(first.text[0, 0, 0].numpy(), raw[3]["d1"][1])
    assert np.allclose(first.acoustic[0, 0, 0].numpy(), raw[4]["d1"][1])
    assert first.present.all()
    assert splits.train.dims.serialize() == {"text": 5, "visual": 3, "acoustic": 4, "personality": 0}


def test_nine_field_layout_splits_validation_from_train(tmp_path):
    splits = load_m3ed(_write(tmp_path, _layout(with_val=False)), valid_fraction=0.5, seed=0)
    assert len(splits.valid) + len(splits.train) == 5 and len(splits.valid) in (2, 3)
    assert len(splits.test) == 1


def test_malformed_pickles(tmp_path):
    raw = list(_layout(with_val=True))
    raw[2] = dict(raw[2], d3=[9])
    with pytest.raises(RamerInputError, match="label index 9"):
        load_m3ed(_write(tmp_path, tuple(raw)))
    with pytest.raises(RamerInputError, match="9- or 10-item tuple"):
        load_m3ed(_write(tmp_path, {"videoIDs": {}}, "dict.pkl"))
    raw = list(_layout(with_val=True))
    raw[4] = dict(raw[4], d2=np.zeros((2, 4)))
    with pytest.raises(RamerInputError, match="expected 3 feature vectors"):
        load_m3ed(_write(tmp_path, tuple(raw), "short.pkl"))


class Payload:
    """Unpickling this would call os.system; the reader must refuse before that."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_code_in_pickle_is_refused(tmp_path):
    with pytest.raises(RamerInputError, match="refusing to load posix.system|refusing to load os.system"):
        load_m3ed(_write(tmp_path, Payload(), "evil.pkl"))
