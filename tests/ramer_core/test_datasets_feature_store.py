"""The feature store: writer and reader round trip, atomic writes, malformed stores."""

from __future__ import annotations

import json

import pytest
import torch

from ramer_core.datasets import (
    FeatureDims,
    FeatureStoreWriter,
    collate,
    load_feature_store,
    read_feature_store,
)
from ramer_core.errors import RamerInputError

DIMS = FeatureDims(text=4, visual=3, acoustic=2, personality=5)
LABELS = ("anger", "joy", "sadness")


def _write(folder, shard_size=2, labelled=True):
    with FeatureStoreWriter(folder, DIMS, LABELS if labelled else None, shard_size=shard_size) as store:
        for i in range(5):
            speaking = i % 2 == 0
            store.add(f"M{i}", "C0" if i < 3 else "C1",
                      text=torch.full((3 if speaking else 0, 4), float(i)),
                      visual=torch.full((i + 1, 3), -float(i)),
                      acoustic=torch.full((2 if speaking else 0, 2), 0.5),
                      labels=(["joy"] if i < 4 else ["anger", "sadness"]) if labelled else None,
                      personality=torch.arange(5.0) if i < 3 else None,
                      split=["train", "train", "valid", "test", "train"][i] if labelled else None,
                      start=float(i), end=i + 1.5, role="speaker" if speaking else "listener")
    return folder


def test_round_trip(tmp_path):
    folder = _write(tmp_path / "store")
    index = json.loads((folder / "index.json").read_text())
    assert index["format"] == "ramer-feature-store" and len(index["shards"]) == 3
    samples, splits, names, dims = read_feature_store(folder)
    assert names == LABELS and dims == DIMS and splits == ["train", "train", "valid", "test", "train"]
    assert [s.key for s in samples] == ["M0/C0", "M1/C0", "M2/C0", "M3/C1", "M4/C1"]
    assert samples[1].missing_acoustic_and_text and not samples[0].missing_acoustic_and_text
    assert samples[1].text.shape == (1, 1, 0, 4) and samples[1].visual[0, 0].tolist() == [[-1.0] * 3] * 2
    assert samples[4].labels.tolist() == [1.0, 0.0, 1.0]
    assert samples[0].personality.tolist() == [[0.0, 1.0, 2.0, 3.0, 4.0]] and samples[3].personality is None
    data = load_feature_store(folder)
    assert [len(data.train), len(data.valid), len(data.test)] == [3, 1, 1]
    batch = collate(data.train.samples)
    assert batch.present[:, 0, 0].tolist() == [[True, True, True], [False, True, False], [True, True, True]]
    assert batch.text_mask[1].sum() == 0 and batch.text_mask[0].sum() == 3
    assert batch.personality_present[:, 0].tolist() == [True, True, False]


def test_unlabelled_store_splits_randomly(tmp_path):
    folder = _write(tmp_path / "plain", labelled=False)
    data = load_feature_store(folder, valid_fraction=0.2, test_fraction=0.2)
    assert [len(data.train), len(data.valid), len(data.test)] == [3, 1, 1]
    assert not data.train.labelled and data.label_names == ()


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="text must be"):
        with FeatureStoreWriter(tmp_path / "store", DIMS, LABELS) as store:
            store.add("M0", "C0", torch.zeros(1, 4), torch.zeros(1, 3), torch.zeros(1, 2))
            store.add("M1", "C0", torch.zeros(1, 7), torch.zeros(1, 3), torch.zeros(1, 2))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RamerInputError, match="already exists"):
        FeatureStoreWriter(_write(tmp_path / "x"), DIMS)


def test_malformed_stores(tmp_path):
    with pytest.raises(RamerInputError, match="index.json not found"):
        read_feature_store(tmp_path)
    folder = _write(tmp_path / "store")
    index = json.loads((folder / "index.json").read_text())
    index["samples"][0]["labels"] = ["fear"]
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(RamerInputError, match="fear"):
        read_feature_store(folder)
    (folder / "shard-00000.safetensors").write_bytes(b"garbage")
    index["samples"][0]["labels"] = None
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(RamerInputError, match="shard-00000.safetensors: cannot read shard"):
        read_feature_store(folder)


def test_random_split_keeps_each_moment_whole(tmp_path):
    with FeatureStoreWriter(tmp_path / "party", DIMS, None) as store:
        for moment in range(10):
            for character in ("C0", "C1", "C2"):
                store.add(f"M{moment}", character, text=torch.zeros(0, 4), visual=torch.ones(2, 3),
                          acoustic=torch.zeros(0, 2))
    data = load_feature_store(tmp_path / "party", valid_fraction=0.2, test_fraction=0.2)
    moments = {name: {s.key.split("/")[0] for s in split.samples}
               for name, split in (("train", data.train), ("valid", data.valid), ("test", data.test))}
    assert [len(moments[k]) for k in ("train", "valid", "test")] == [6, 2, 2]
    assert [len(data.train), len(data.valid), len(data.test)] == [18, 6, 6]
    assert not (moments["train"] & moments["valid"] or moments["train"] & moments["test"]
                or moments["valid"] & moments["test"])
