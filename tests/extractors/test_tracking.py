"""Tracks within shots: overlap and appearance association, gaps bridged, spurious tracks dropped."""

from __future__ import annotations

import numpy as np

from extractors.contracts import FaceDetection
from extractors.faces import FaceDetector
from extractors.media import iter_frames
from extractors.shots import ShotDetector
from extractors.tracking import FaceTracker, TrackerConfig, box_iou, track_faces


def _det(t, x, y=100.0, size=80.0, score=0.99):
    return FaceDetection(t=t, box=(x, y, x + size, y + size), score=score, landmarks=np.zeros((5, 2), np.float32))


def test_box_iou_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert np.allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_two_moving_faces_give_two_tracks_and_a_gap_is_bridged():
    frames = []
    for k in range(12):
        t = k * 0.25
        detections = [_det(t, 100 + 5 * k), _det(t, 600 - 5 * k)]
        if k in (5, 6):                 # the right face is missed for 0.5 s
            detections = detections[:1]
        frames.append((t, 0, detections, None))
    tracks = track_faces(frames)
    assert len(tracks) == 2
    left, right = sorted(tracks, key=lambda tr: tr.detections[0].box[0])
    assert len(left.detections) == 12 and len(right.detections) == 10
    assert all(d.box[0] < 200 for d in left.detections) and all(d.box[0] > 500 for d in right.detections)


def test_long_gap_and_cut_end_tracks_and_short_tracks_are_dropped():
    frames = [(k * 0.25, 0, [_det(k * 0.25, 100)], None) for k in range(4)]              # 0.00-0.75
    frames += [(2.5 + k * 0.25, 0, [_det(2.5 + k * 0.25, 100)], None) for k in range(4)]  # gap of 1.75 s > 1.0
    frames += [(3.5 + k * 0.25, 1, [_det(3.5 + k * 0.25, 100)], None) for k in range(3)]  # same place, new shot
    frames += [(4.25, 1, [_det(4.25, 100), _det(4.25, 900)], None)]                        # a one-frame blip
    tracks = track_faces(frames, TrackerConfig(min_detections=3))
    assert [(tr.shot, len(tr.detections), tr.start) for tr in tracks] == [(0, 4, 0.0), (0, 4, 2.5), (1, 4, 3.5)]
    assert len({tr.id for tr in tracks}) == 3


def _frame_with(face, x):
    image = np.zeros((400, 800, 3), np.uint8)
    image[100:180, x : x + 80] = face
    return image


def test_appearance_decides_when_overlap_is_too_small():
    rng = np.random.default_rng(0)
    face = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    stranger = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    # A 70 px jump of an 80 px box: IoU 0.067, below min_iou, centres 0.9 box sizes apart.
    for second_face, expected in ((face, ["T0"]), (stranger, ["T1"])):
        tracker = FaceTracker()
        assert tracker.update(0.0, 0, [_det(0.0, 100)], _frame_with(face, 100)) == ["T0"]
        assert tracker.update(0.25, 0, [_det(0.25, 170)], _frame_with(second_face, 170)) == expected
    # Without images only overlap counts: the jump starts a new track.
    tracker = FaceTracker()
    tracker.update(0.0, 0, [_det(0.0, 100)])
    assert tracker.update(0.25, 0, [_det(0.25, 170)]) == ["T1"]


def test_lip_reading_clip_gives_one_track(media_dir):
    detector = FaceDetector()
    shots, tracker = ShotDetector(), FaceTracker()
    for frame in iter_frames(media_dir / "deep_lip_reading_demo.mp4"):
        found = detector.detect([frame.image], [frame.t])[0]
        tracker.update(frame.t, shots.update(frame.t, frame.image), found, frame.image)
    tracks = tracker.finish()
    assert len(tracks) == 1
    assert len(tracks[0].detections) == 4 and tracks[0].start == 0.0


def test_a_cut_between_two_clips_splits_shots_and_tracks(media_dir):
    """Interview frames then a talking head, spliced at 2.0 s: one cut, no track across it."""
    import cv2

    first = [f for f in iter_frames(media_dir / "visualvoice_interview.mp4") if f.t < 2.0]
    second = [f for f in iter_frames(media_dir / "retalking_face2.mp4") if f.t < 2.0]
    detector, shots, tracker = FaceDetector(), ShotDetector(), FaceTracker()
    shot_of = []
    for k, frame in enumerate(first + second):
        t = k * 0.25
        image = cv2.resize(frame.image, (640, 360)) if k >= len(first) else frame.image
        shot = shots.update(t, image)
        shot_of.append(shot)
        tracker.update(t, shot, detector.detect([image], [t])[0], image)
    assert [(s.index, s.start) for s in shots.shots] == [(0, 0.0), (1, 2.0)]
    assert shot_of == [0] * len(first) + [1] * len(second)
    tracks = tracker.finish()
    assert sorted(tr.shot for tr in tracks) == [0, 0, 1]
    for track in tracks:
        assert all((d.t < 2.0) == (track.shot == 0) for d in track.detections)


def test_tracks_are_reported_as_they_close():
    """Gaps and cuts close tracks mid-video; take_closed reports each once (kept or dropped), finish the rest."""
    tracker = FaceTracker(TrackerConfig(min_detections=3, max_gap_seconds=0.5))
    tracker.update(0.0, 0, [_det(0.0, 100), _det(0.0, 600)])
    for k in range(1, 5):
        tracker.update(k * 0.25, 0, [_det(k * 0.25, 100)])     # the right face was seen once: spurious
    closed = tracker.take_closed()
    assert closed.kept == [] and closed.dropped == ["T1"]
    tracker.update(1.25, 1, [_det(1.25, 100)])                 # a cut closes T0 (5 detections)
    closed = tracker.take_closed()
    assert [t.id for t in closed.kept] == ["T0"] and len(closed.kept[0].detections) == 5 and closed.dropped == []
    assert tracker.take_closed().kept == []                    # reported once
    for k in range(6, 9):
        tracker.update(k * 0.25, 1, [_det(k * 0.25, 100)])
    assert [t.id for t in tracker.finish()] == ["T0", "T2"]
    assert [t.id for t in tracker.take_closed().kept] == ["T2"]  # closed by finish
