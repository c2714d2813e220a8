"""MTCNN face detection: pure-torch NMS, no torchvision left behind, real clips."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from extractors import faces
from extractors.faces import FaceDetector, FaceDetectorConfig, batched_nms, nms
from extractors.media import iter_frames
from extractors.tracking import box_iou


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.0]])
    scores = torch.tensor([0.8, 0.9, 0.5, 0.7])
    # IoU(box1, box0) = 81 / 119 = 0.68; IoU(box3, box1) = 72 / 118 = 0.61
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.65).tolist() == [1, 3, 2]   # box3 vs box1 0.61 kept; box0 vs box1 0.68 dropped
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_batched_nms_never_suppresses_across_groups():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([0.8, 0.9, 0.7])
    groups = torch.tensor([0, 0, 1])
    assert batched_nms(boxes, scores, groups, 0.5).tolist() == [1, 2]


def test_no_torchvision_stand_in_is_left_behind():
    FaceDetector(FaceDetectorConfig(max_side=320))
    if not faces.torchvision_available():
        assert not any(name == "torchvision" or name.startswith("torchvision.") for name in sys.modules)
    else:
        assert sys.modules["torchvision"].__spec__ is not None
    import transformers.utils  # must not trip over a fake torchvision

    assert transformers.utils is not None


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def _frame_at(path, t):
    return next(f for f in iter_frames(path, fps=None) if f.t >= t - 1e-6)


def test_crowd_middle_frame_has_at_least_five_faces(detector, media_dir):
    frame = _frame_at(media_dir / "facenet_pytorch_video.mp4", 2.1)
    found = detector.detect([frame.image], [frame.t])[0]
    assert len(found) >= 5
    for detection in found:
        x1, y1, x2, y2 = detection.box
        assert 0 <= x1 < x2 <= 1920 and 0 <= y1 < y2 <= 1080       # source pixels, not the 640 px copy
        assert detection.score >= 0.9 and detection.t == frame.t
        assert detection.landmarks.shape == (5, 2)
        eyes = detection.landmarks[:2]
        assert np.all((eyes[:, 0] > x1) & (eyes[:, 0] < x2) & (eyes[:, 1] > y1) & (eyes[:, 1] < y2))
        assert eyes[0, 0] < eyes[1, 0]                               # left eye (image left) first


def test_downscaled_boxes_map_back_to_source_pixels(detector, media_dir):
    frame = _frame_at(media_dir / "visualvoice_interview.mp4", 3.0)
    small = detector.detect([frame.image], [frame.t])[0]
    full = FaceDetector(FaceDetectorConfig(max_side=0, min_face_size=60)).detect([frame.image], [frame.t])[0]
    assert len(small) == len(full) == 2
    order_small = sorted(small, key=lambda d: d.box[0])
    order_full = sorted(full, key=lambda d: d.box[0])
    for a, b in zip(order_small, order_full, strict=True):
        assert box_iou(np.array(a.box), np.array(b.box))[0, 0] > 0.8
        assert np.abs(a.landmarks - b.landmarks).max() < 8.0
    # Host on the left half, guest on the right half of the split screen.
    assert order_small[0].box[2] < 640 < order_small[1].box[0]


def test_batched_detection_equals_frame_by_frame(detector, media_dir):
    frames = list(iter_frames(media_dir / "retalking_face2.mp4", fps=2.0))[:4]
    batched = detector.detect([f.image for f in frames], [f.t for f in frames])
    for frame, found in zip(frames, batched, strict=True):
        single = detector.detect([frame.image], [frame.t])[0]
        assert len(single) == len(found) == 1
        assert np.allclose(single[0].box, found[0].box, atol=1e-2)


def test_blank_frame_has_no_faces(detector):
    assert detector.detect([np.full((360, 640, 3), 127, np.uint8)], [0.0]) == [[]]


def test_per_image_nms_equals_the_offset_trick():
    # batched_nms suppresses each group on its own; torchvision's offset trick must give the same boxes.
    rng = np.random.default_rng(1)
    corner = rng.uniform(0, 300, (600, 2))
    boxes = torch.tensor(np.c_[corner, corner + rng.uniform(5, 60, (600, 2))], dtype=torch.float32)
    scores, groups = torch.rand(600, generator=torch.Generator().manual_seed(0)), torch.tensor(rng.integers(0, 8, 600))
    offsets = groups.to(boxes) * (boxes.max() + 1)
    expected = nms(boxes + offsets[:, None], scores, 0.5)
    assert torch.equal(batched_nms(boxes, scores, groups, 0.5), expected)
    assert len(expected) < 600
