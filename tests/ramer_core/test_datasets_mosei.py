"""CMU-MOSEI aligned reader on small files in the exact TAILOR/CARAT layout."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from ramer_core.datasets import collate, load_dataset, load_mosei_aligned
from ramer_core.errors import RamerInputError


def _split(n: int, rng: np.random.Generator, tgt: list) -> dict:
    audio = rng.standard_normal((n, 60, 74)).astype(np.float32)
    audio[0, 3, 5] = -np.inf  # COVAREP emits -inf; readers zero it
    return {"src-text": rng.standard_normal((n, 60, 300)).astype(np.float32), "src-audio": audio,
            "src-visual": rng.standard_normal((n, 60, 35)).astype(np.float32), "tgt": tgt,
            "id": [f"video{i}" for i in range(n)]}


@pytest.fixture
def mosei_file(tmp_path):
    rng = np.random.default_rng(0)
    data = {
        # <s>=2 ... </s>=3 around the emotion tokens 4..9
        "train": _split(3, rng, [[2, 4, 6, 3], [2, 9, 3], [2, 3]]),
        "valid": _split(2, rng, [[2, 5, 3], [2, 7, 8, 3]]),
        "test": _split(1, rng, [[2, 4, 5, 6, 7, 8, 9, 3]]),
    }
    path = tmp_path / "train_valid_test.pt"
    torch.save(data, path)
    return path, data


def test_reads_splits_labels_and_features(mosei_file):
    path, data = mosei_file
    splits = load_mosei_aligned(path)
    assert [len(splits.train), len(splits.valid), len(splits.test)] == [3, 2, 1]
    assert splits.label_names == ("happy", "sad", "anger", "surprise", "disgust", "fear")
    assert splits.train.labels_matrix().tolist() == [[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0] * 6]
    assert splits.valid.labels_matrix().tolist() == [[0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]]
    assert splits.test.labels_matrix().tolist() == [[1] * 6]
    sample = splits.train[1]
    assert torch.equal(sample.text[0, 0], torch.from_numpy(data["train"]["src-text"][1]))
    assert sample.acoustic.shape == (1, 1, 60, 74) and sample.visual.shape == (1, 1, 60, 35)
    assert splits.train[0].acoustic[0, 0, 3, 5] == 0.0  # -inf zeroed
    batch = collate(splits.train.samples)
    assert batch.present.all() and batch.text_mask.all()
    assert splits.train.dims.serialize() == {"text": 300, "visual": 35, "acoustic": 74, "personality": 0}
    assert load_dataset("mosei-aligned", path).test.labels_matrix().sum() == 6


def test_wrong_feature_size_is_a_clear_error(tmp_path, mosei_file):
    _, data = mosei_file
    data["valid"]["src-visual"] = np.zeros((2, 60, 20), dtype=np.float32)
    path = tmp_path / "bad.pt"
    torch.save(data, path)
    with pytest.raises(RamerInputError, match=r"valid/src-visual has shape \(2, 60, 20\)"):
        load_mosei_aligned(path)


def test_bad_token_and_missing_key(tmp_path, mosei_file):
    _, data = mosei_file
    data["train"]["tgt"] = [[2, 12, 3], [2, 3], [2, 3]]
    torch.save(data, tmp_path / "token.pt")
    with pytest.raises(RamerInputError, match="token 12"):
        load_mosei_aligned(tmp_path / "token.pt")
    data["train"]["tgt"] = [[2, 3]] * 3
    del data["test"]["src-audio"]
    torch.save(data, tmp_path / "key.pt")
    with pytest.raises(RamerInputError, match="lacks src-audio"):
        load_mosei_aligned(tmp_path / "key.pt")


def test_pickle_needing_code_is_refused(tmp_path):
    path = tmp_path / "code.pt"
    torch.save({"train": pathlib.PurePosixPath("x")}, path)
    with pytest.raises(RamerInputError, match="cannot be loaded without running code"):
        load_mosei_aligned(path)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(RamerInputError, match="not found"):
        load_mosei_aligned(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(RamerInputError, match="garbage.pt"):
        load_mosei_aligned(tmp_path / "garbage.pt")
