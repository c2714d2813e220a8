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
        {"d1", "d2"},                                                                # trainVid
    ]
    # CARAT reads items 7, 8, 9 as train, validation, test; a 9-item file has no validation
    fields += [{"d4"}, {"d3"}] if with_val else [{"d3", "d4"}]
    return tuple(fields)


def _write(tmp_path, obj, name="m3ed.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj))
    return path


def test_reads_dialogues_with_the_published_split_and_label_order(tmp_path):
    raw = _layout(with_val=True)
    splits = load_m3ed(_write(tmp_path, raw))
    assert M3ED_LABELS == ("happy", "neutral", "sad", "disgust", "anger", "fear", "surprise")  # CARAT tokens 4..10
    assert splits.label_names == M3ED_LABELS
    # one sample per dialogue; validation is item 8 (d4), test item 9 (d3)
    assert [s.key for s in splits.train] == ["d1", "d2"]
    assert [s.key for s in splits.valid] == ["d4"] and [s.key for s in splits.test] == ["d3"]
    labels = splits.train.labels_matrix()
    assert labels[0].nonzero().flatten().tolist() == [0, 1, 4]  # union of d1's utterances 0 and [1, 4]
    assert labels[1].nonzero().flatten().tolist() == [2, 6]
    first = splits.train[0]
    assert first.text.shape == (1, 1, 2, 5) and first.acoustic.shape == (1, 1, 2, 4)  # utterances as time
    assert np.allclose(first.text[0, 0, 1].numpy(), raw[3]["d1"][1])
    assert np.allclose(first.acoustic[0, 0].numpy(), raw[4]["d1"])
    assert first.present.all() and first.text_mask.all()
    assert splits.train.dims.serialize() == {"text": 5, "visual": 3, "acoustic": 4, "personality": 0}
    utterances = load_m3ed(_write(tmp_path, raw), unit="utterance")
    assert [len(utterances.train), len(utterances.valid), len(utterances.test)] == [5, 1, 1]
    assert utterances.train.labels_matrix()[1].nonzero().flatten().tolist() == [1, 4]


def test_dialogues_are_cut_to_sixty_utterances(tmp_path):
    raw = list(_layout(with_val=True))
    raw[2] = dict(raw[2], d3=[0] * 70 + [6])  # the only "surprise" comes after utterance 60 ...
    rng = np.random.default_rng(0)
    for item, dim in ((3, 5), (4, 4), (5, 3)):
        raw[item] = dict(raw[item], d3=rng.standard_normal((71, dim)).astype(np.float32))
    test = load_m3ed(_write(tmp_path, tuple(raw))).test[0]
    assert test.text.shape[2] == 60
    assert test.labels.nonzero().flatten().tolist() == [0, 6]  # ... and still counts: labels of the whole dialogue


def test_reads_carat_converted_pt(tmp_path):
    import torch

    rng = np.random.default_rng(2)

    def split(n):
        return {"src-text": rng.standard_normal((n, 6, 5)).astype(np.float32),
                "src-visual": rng.standard_normal((n, 6, 4)).astype(np.float32),
                "src-audio": rng.standard_normal((n, 6, 3)).astype(np.float32),
                "len_list": [2, 6, 9][:n], "tgt": [[2, 4, 10, 3], [2, 5, 3], [2, 9, 3]][:n]}

    path = tmp_path / "m3ed_data_60.pt"
    torch.save({"train": split(3), "valid": split(2), "test": split(1)}, path)
    splits = load_m3ed(path)
    assert splits.label_names == M3ED_LABELS and len(splits.train) == 3
    assert splits.train.labels_matrix()[0].nonzero().flatten().tolist() == [0, 6]  # tokens 4 (happy), 10 (surprise)
    assert splits.train[0].text.shape[2] == 2 and splits.train[2].text.shape[2] == 6  # len_list masks the padding


def test_nine_field_layout_splits_validation_from_train(tmp_path):
    splits = load_m3ed(_write(tmp_path, _layout(with_val=False)), valid_fraction=0.5, seed=0)
    assert len(splits.valid) == len(splits.train) == 1
    assert sorted(s.key for s in splits.test) == ["d3", "d4"]


def test_malformed_pickles(tmp_path):
    raw = list(_layout(with_val=True))
    raw[2] = dict(raw[2], d3=[9])  # (test dialogue d3)
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
