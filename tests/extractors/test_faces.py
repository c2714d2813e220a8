"""MTCNN face detection: the OpenCV cascade against facenet-pytorch's own, re-measuring faces, real clips."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from extractors import faces
from extractors.faces import FaceDetector, FaceDetectorConfig
from extractors.media import iter_frames
from extractors.mtcnn import nms_indices, nms_min_indices, per_image
from extractors.tracking import box_iou


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.0]])
    scores = np.array([0.8, 0.9, 0.5, 0.7])
    # IoU(box1, box0) = 81 / 119 = 0.68; IoU(box3, box1) = 72 / 118 = 0.61
    assert nms_indices(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms_indices(boxes, scores, 0.65).tolist() == [1, 3, 2]   # box3 vs box1 0.61 kept; box0 vs box1 0.68 dropped
    assert nms_indices(boxes[:0], scores[:0], 0.5).tolist() == []
    # Intersection over the smaller box: a box inside a better one goes, whatever its IoU.
    inner = np.array([[0, 0, 20, 20], [2, 2, 8, 8.0]])
    assert nms_min_indices(inner, np.array([0.9, 0.8]), 0.7).tolist() == [0]
    assert nms_indices(inner, np.array([0.9, 0.8]), 0.7).tolist() == [0, 1]


def test_per_image_nms_never_suppresses_across_images():
    table = np.array([[0, 0, 10, 10, 0.8], [1, 1, 11, 11, 0.9], [0, 0, 10, 10, 0.7]], dtype=np.float32)
    assert per_image(nms_indices, table, np.array([0, 0, 1]), 0.5).tolist() == [1, 2]


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


def test_candidates_go_through_r_and_o_net_a_chunk_at_a_time(detector, media_dir):
    """A crowded frame gives hundreds of candidates; R-Net and O-Net see at most ``crop_batch`` of them per
    call (their activations for all at once were the visual pass's peak) and find the same faces."""
    frame = _frame_at(media_dir / "facenet_pytorch_video.mp4", 2.1)
    chunked = FaceDetector(FaceDetectorConfig(crop_batch=5))
    seen: list[int] = []
    hooks = [net.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
             for net in (chunked.cascade.rnet, chunked.cascade.onet)]
    try:
        found = chunked.detect([frame.image], [frame.t])[0]
    finally:
        for hook in hooks:
            hook.remove()
    whole = detector.detect([frame.image], [frame.t])[0]
    assert sum(seen) > 20 and max(seen) <= 5
    assert len(found) == len(whole) >= 5
    for a, b in zip(found, whole, strict=True):
        assert np.allclose(a.box, b.box, atol=1e-3) and np.allclose(a.landmarks, b.landmarks, atol=1e-3)
        assert abs(a.score - b.score) < 1e-5


def test_blank_frame_has_no_faces(detector):
    assert detector.detect([np.full((360, 640, 3), 127, np.uint8)], [0.0]) == [[]]


def _reference_detect(images: np.ndarray, detector: FaceDetector) -> list[np.ndarray]:
    """facenet-pytorch's own detect_face with the same nets and settings (torchvision's NMS semantics)."""
    reference = faces.import_facenet()

    def batched_nms(boxes, scores, idxs, threshold):
        table = torch.cat([boxes, scores[:, None]], 1).detach().numpy()
        keep = per_image(nms_indices, table, idxs.numpy(), threshold)
        return torch.as_tensor(keep[np.argsort(-table[keep, 4], kind="stable")])

    cfg = detector.config
    original = reference.batched_nms
    reference.batched_nms = batched_nms
    try:
        with torch.inference_mode():
            boxes, _ = reference.detect_face(images, cfg.min_face_size, *detector.nets, list(cfg.thresholds),
                                             cfg.factor, detector.device)
    finally:
        reference.batched_nms = original
    return [np.asarray(b, dtype=np.float64).reshape(-1, 5) for b in boxes]


@pytest.mark.parametrize("name, seconds", [("visualvoice_interview.mp4", (1.0, 6.0, 12.0)),
                                           ("facenet_pytorch_video.mp4", (0.5, 2.1, 3.5))])
def test_cascade_finds_the_faces_facenet_pytorch_finds(detector, media_dir, name, seconds):
    frames = [_frame_at(media_dir / name, t) for t in seconds]
    small = detector._downscaled([f.image for f in frames])[0]
    reference = _reference_detect(small, detector)
    ours = [out.boxes for out in detector.cascade.detect(small)]
    threshold = detector.config.min_score
    deviations = []
    for ref, mine in zip(reference, ours, strict=True):
        ref, mine = ref[ref[:, 4] >= threshold], mine[mine[:, 4] >= threshold]
        assert len(ref) > 0
        # Resampling differs (OpenCV area averaging, not an adaptive pool), so boxes move by a pixel or two
        # and a borderline face may flip; every clear face must be there.
        assert abs(len(mine) - len(ref)) <= 1
        iou = box_iou(ref[:, :4], mine[:, :4])
        assert (iou.max(axis=1) > 0.7).sum() >= len(ref) - 1
        nearest = mine[iou.argmax(axis=1), :4]
        deviations += list(np.abs(ref[:, :4] - nearest).max(axis=1) / (ref[:, 2] - ref[:, 0]))
    # Measured: median 0.04 of the face's width; a box regression off by 3x on one side gives 0.10-0.12.
    assert np.median(deviations) < 0.07


def test_verify_re_measures_faces_that_stay_and_drops_a_box_without_one(detector, media_dir):
    before, after = (_frame_at(media_dir / "visualvoice_interview.mp4", t) for t in (3.0, 3.25))
    prior = detector.detect([before.image], [before.t])[0]
    assert len(prior) == 2
    empty_wall = replace(prior[0], box=(560.0, 600.0, 660.0, 700.0))   # the desk under the host: no face
    kept = detector.verify(after.image, after.t, prior + [empty_wall])
    assert len(kept) == 2 and all(d.t == after.t for d in kept)
    searched = detector.detect([after.image], [after.t])[0]
    for face in kept:
        assert max(box_iou(np.array(face.box), np.array(s.box))[0, 0] for s in searched) > 0.8
        assert face.score >= detector.config.min_score and face.landmarks.shape == (5, 2)


def test_follow_searches_the_frame_when_a_face_is_lost(detector, media_dir):
    frame = _frame_at(media_dir / "visualvoice_interview.mp4", 3.0)
    found = detector.detect([frame.image], [frame.t])[0]
    host = min(found, key=lambda d: d.box[0])
    moved = replace(host, box=(host.box[0] + 200, host.box[1], host.box[2] + 200, host.box[3]))  # not there any more
    assert len(detector.verify(frame.image, frame.t, [moved])) == 0
    assert len(detector.follow(frame.image, frame.t, [moved])) == 2       # the search finds both faces
    assert len(detector.follow(frame.image, frame.t, [host])) == 1        # nothing lost: no search


