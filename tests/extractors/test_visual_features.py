"""Per-(time span, character) visual feature sequences, and the whole visual pass on real and faceless video."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch

from extractors.contracts import FaceDetection
from extractors.expression import fer_face_crop
from extractors.media import iter_frames
from extractors.tracking import box_iou
from extractors.visual_features import (
    D_EXPRESSION,
    D_VISUAL,
    GEOMETRY_NAMES,
    MESH_COLUMNS,
    VISUAL_FEATURE_NAMES,
    FullSearchSchedule,
    VisualExtractor,
    face_feature_vector,
    landmark_geometry,
)


def test_feature_layout():
    assert D_VISUAL == len(VISUAL_FEATURE_NAMES) == 20
    assert VISUAL_FEATURE_NAMES[:D_EXPRESSION] == tuple(
        f"expression_{x}" for x in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))
    assert VISUAL_FEATURE_NAMES[D_EXPRESSION:D_EXPRESSION + 8] == GEOMETRY_NAMES
    # Appended after the first 15 in this order (other stages depend on the layout).
    assert VISUAL_FEATURE_NAMES[15:] == ("mesh_lip_opening", "mesh_mouth_width", "mesh_eye_openness",
                                         "mesh_brow_raise", "mesh_face_presence")
    assert VISUAL_FEATURE_NAMES[MESH_COLUMNS] == VISUAL_FEATURE_NAMES[15:]


def test_landmark_geometry_of_a_frontal_face():
    # Eyes 40 px apart on a level line, nose 30 px below, mouth 60 px below, 40 px wide.
    landmarks = np.array([[80, 100], [120, 100], [100, 130], [80, 160], [120, 160]], np.float32)
    face = FaceDetection(t=0.0, box=(60, 70, 140, 190), score=0.99, landmarks=landmarks)
    geometry = landmark_geometry(face, frame_height=480)
    expected = [1.0, 1.5, 0.75, 0.5, 0.0, 0.0, 0.5, 0.25]
    np.testing.assert_allclose(geometry, expected, atol=1e-6)
    # Turned head: nose off-centre towards the right eye; tilted: eye line rotated clockwise.
    turned = landmarks.copy()
    turned[2, 0] = 110
    assert landmark_geometry(FaceDetection(0.0, face.box, 0.99, turned), 480)[5] == pytest.approx(0.25)
    tilted = landmarks.copy()
    tilted[1, 1] = 140
    assert landmark_geometry(FaceDetection(0.0, face.box, 0.99, tilted), 480)[4] == pytest.approx(np.arctan2(40, 40))


def _faceless_video(path, seconds=2.0, fps=10):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        y, x = np.mgrid[0:240, 0:320]
        for i in range(int(seconds * fps)):
            image = np.stack([(x + 8 * i) % 256, (y * 2) % 256, np.full_like(x, 90)], axis=-1).astype(np.uint8)
            image[60:120, 40 + 5 * i : 100 + 5 * i] = 255         # a moving white square
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_video_without_faces_gives_nothing_and_no_error(extractor, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(extractor.config, "torch_threads", 2)
    monkeypatch.setattr(extractor.detector, "detect", lambda *a, _d=extractor.detector.detect: seen.append(
        torch.get_num_threads()) or _d(*a))
    result = extractor(_faceless_video(tmp_path / "no_faces.mp4"))
    assert seen == [2] and torch.get_num_threads() == 1    # threads set for the pass, then restored
    assert result.frames_analysed == 8
    assert result.tracks == [] and result.characters == [] and result.features == {}
    assert len(result.shots) == 1
    assert result.serialize()["characters"] == []


@pytest.mark.slow
def test_sequences_of_a_talking_head(extractor, media_dir):
    calls = []
    result = extractor(media_dir / "retalking_face1.mp4", progress=lambda done, total: calls.append((done, total)))
    assert len(result.characters) == 1 and len(result.tracks) == 1
    assert calls and calls[-1][1] == pytest.approx(result.info.duration) and calls[-1][0] <= calls[-1][1]
    character = result.characters[0].id
    times, features = result.sequence(character, 1.1, 3.1)
    assert features.dtype == np.float32 and features.shape == (8, D_VISUAL)     # 4 frames/s over 2 s
    assert np.all((times >= 1.1) & (times < 3.1)) and np.all(np.diff(times) > 0)
    np.testing.assert_allclose(features[:, :D_EXPRESSION].sum(axis=1), 1.0, atol=1e-5)
    # the expression model really ran: not the uniform row written for faces it would skip
    assert np.all(features[:, :D_EXPRESSION].max(axis=1) > 1.0 / D_EXPRESSION + 0.05)
    assert np.isfinite(features).all()
    geometry = features[:, D_EXPRESSION:]
    assert np.all((geometry[:, 0] > 0.5) & (geometry[:, 0] < 1.5))            # mouth width vs eye distance
    assert np.all(np.abs(geometry[:, 4]) < 0.5)                               # an upright head
    # Mouth movement while talking: the mouth-opening proxy varies over the clip.
    _, whole = result.sequence(character, 0.0, result.info.duration)
    assert whole[:, D_EXPRESSION + 2].std() > 0.01
    # FaceMesh columns: a present face, lips that open and close, eyes open, brows above them.
    lip, mouth, eyes, brows, presence = whole[:, MESH_COLUMNS].T
    assert np.all(presence > 0.9)
    assert lip.min() < 0.03 and lip.max() > 0.06 and lip.std() > 0.01
    assert np.all((mouth > 0.4) & (mouth < 1.0)) and np.all((eyes > 0.1) & (eyes < 0.6))
    assert np.all((brows > 0.15) & (brows < 0.5))
    # The same features for one face in one image, as another stage (FER2013 faces) computes them.
    frame = next(f for f in iter_frames(media_dir / "retalking_face1.mp4") if f.t >= times[3] - 1e-6)
    track = result.track(result.characters[0].track_ids[0])
    index = next(i for i, d in enumerate(track.detections) if d.t == frame.t)
    alone = face_feature_vector(frame.image, track.detections[index], expression=extractor.expression,
                                mesh=extractor.mesh)
    np.testing.assert_allclose(alone, result.features[track.id][index], atol=1e-5)
    # Absent: a span after the end of the video, or empty.
    times, features = result.sequence(character, 100.0, 110.0)
    assert times.shape == (0,) and features.shape == (0, D_VISUAL)
    with pytest.raises(KeyError):
        result.sequence("C9", 0.0, 1.0)


def _clip_from(source, path, rate, seconds, size=None, canvas=None):
    """Re-times ``source`` at ``rate`` frames/s for ``seconds`` (optionally resized, or pasted centred on a
    black ``canvas`` (width, height)) and writes it to ``path`` as H.264."""
    frames = [f.image for f in iter_frames(source, fps=float(rate))][: int(seconds * rate)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        height, width = frames[0].shape[:2] if size is None else size[::-1]
        if canvas is not None:
            width, height = canvas
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for image in frames:
            if size is not None:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            if canvas is not None:
                board = np.zeros((height, width, 3), np.uint8)
                y, x = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
                board[y : y + image.shape[0], x : x + image.shape[1]] = image
                image = board
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.slow
def test_4k_frames_are_detected_in_small_batches(extractor, media_dir, tmp_path, monkeypatch):
    # A face in the middle of a 3840x2160 frame: detection batches are capped by pixels (2 frames at 4K,
    # not 8), features come out for every frame, boxes in 4K pixels.
    path = _clip_from(media_dir / "retalking_face1.mp4", tmp_path / "uhd.mp4", 4, 1.5, canvas=(3840, 2160))
    batches, followed = [], []
    monkeypatch.setattr(extractor.detector, "detect", lambda images, times, _d=extractor.detector.detect:
                        batches.append(len(images)) or _d(images, times))
    monkeypatch.setattr(extractor.detector, "follow", lambda image, t, prior, _f=extractor.detector.follow:
                        followed.append(t) or _f(image, t, prior))
    result = extractor(path)
    assert result.info.width == 3840 and result.frames_analysed == 6
    # Searched frames go in batches of at most 2; the others are followed one at a time.
    assert max(batches) <= 2 and sum(batches) + len(followed) == 6 and len(followed) == 3
    assert len(result.tracks) == 1
    track = result.tracks[0]
    assert len(track.detections) == 6 and result.features[track.id].shape == (6, D_VISUAL)
    x1, y1, x2, y2 = track.detections[0].box
    assert 1570 < x1 < x2 < 2270 and 730 < y1 < y2 < 1430                 # inside the pasted 700 px face
    assert np.all(result.features[track.id][:, MESH_COLUMNS][:, -1] > 0.9)


@pytest.mark.slow
@pytest.mark.parametrize("rate, expected_frames", [(Fraction(30000, 1001), 8), (Fraction(5, 2), 5)])
def test_odd_frame_rates(extractor, media_dir, tmp_path, rate, expected_frames):
    # NTSC 29.97 frames/s, and a rate below the 4 frames/s analysis rate (every frame analysed once).
    path = _clip_from(media_dir / "retalking_face1.mp4", tmp_path / "odd.mp4", rate, 2.0, size=(350, 350))
    result = extractor(path)
    assert result.frames_analysed == expected_frames
    assert len(result.characters) == 1
    times, features = result.sequence(result.characters[0].id, 0.0, result.info.duration + 1)
    assert len(times) == expected_frames and np.all(np.diff(times) > 0)
    assert np.isfinite(features).all() and np.all(features[:, MESH_COLUMNS][:, -1] > 0.9)


def test_fer_crop_from_rgb_equals_crop_from_the_grey_frame():
    # The pass greys only the crop's pixels; the crop must equal fer's (whole grey frame) crop.
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    for box in [(100.5, 80.2, 180.9, 190.0), (0.0, 0.0, 50.0, 40.0), (600.0, 300.0, 640.0, 360.0), (-20, 330, 30, 380)]:
        np.testing.assert_array_equal(fer_face_crop(frame, box), fer_face_crop(gray, box))


@pytest.mark.parametrize("every, expected", [(1, 6), (2, 2), (0, 0)])
def test_heap_is_trimmed_every_so_many_detector_batches(extractor, media_dir, tmp_path, monkeypatch, every, expected):
    # Long passes fragment the C heap (benchmarks/results/memory.md); the pass hands freed pages back every
    # `trim_heap_every` detector batches, twice in each. 6 frames in batches of 2 -> 3 batches.
    import dataclasses

    import extractors.visual_features as visual_features

    path = _clip_from(media_dir / "retalking_face1.mp4", tmp_path / "short.mp4", 4, 1.5, size=(320, 320))
    trims = []
    monkeypatch.setattr(visual_features, "return_freed_memory", lambda: trims.append(1))
    monkeypatch.setattr(extractor, "config", dataclasses.replace(
        extractor.config, trim_heap_every=every, max_batch_pixels=2 * 320 * 320))
    result = extractor(path)
    assert result.frames_analysed == 6
    assert len(trims) == expected


def test_a_batch_is_trimmed_after_its_last_step(extractor, media_dir, tmp_path, monkeypatch):
    # The mesh, the expression crops and the chips' embeddings free their buffers after detection; with only
    # the trim after detection those stayed resident until the next batch. So a batch is trimmed after its
    # detection and again after the tracks it publishes, its last step.
    import dataclasses

    import extractors.visual_features as visual_features

    path = _clip_from(media_dir / "retalking_face1.mp4", tmp_path / "short.mp4", 4, 1.5, size=(320, 320))
    events = []
    monkeypatch.setattr(visual_features, "return_freed_memory", lambda: events.append("trim"))
    monkeypatch.setattr(extractor, "config", dataclasses.replace(
        extractor.config, trim_heap_every=1, max_batch_pixels=2 * 320 * 320))
    extractor(path, on_tracks=lambda closed, settled: events.append("tracks"))
    assert events[:9] == ["trim", "tracks", "trim"] * 3


def test_full_search_schedule_searches_every_nth_frame_and_at_every_cut():
    schedule = FullSearchSchedule(2)
    assert [schedule.due(shot) for shot in (0, 0, 0, 0, 1, 1, 1, 2, 3, 3)] == [
        True, False, True, False, True, False, True, True, True, False]
    assert all(FullSearchSchedule(1).due(0) for _ in range(3))
    with pytest.raises(ValueError):
        FullSearchSchedule(0)


def test_faces_between_searches_are_followed_and_cuts_are_searched(extractor, media_dir, tmp_path, monkeypatch):
    """A montage of five people (a cut every 1.5 s): searching every second frame finds what searching every
    frame finds (the same tracks, starting at each cut), with the pyramid run on about half the frames."""
    from tests.extractors import edited_media as em

    path = em.write_edit(em.montage(0.0), media_dir, tmp_path / "montage.mp4")
    searched = []
    search = extractor.detector.cascade.detect
    monkeypatch.setattr(extractor.detector.cascade, "detect", lambda frames: searched.append(len(frames)) or search(frames))
    every_frame = VisualExtractor(replace(extractor.config, full_detection_every=1), models=None)
    reference = every_frame(path)
    followed = extractor(path)
    assert extractor.config.full_detection_every == 2
    assert len(followed.shots) == len(reference.shots) == 5
    assert [(t.shot, [round(d.t, 3) for d in t.detections]) for t in followed.tracks] == \
        [(t.shot, [round(d.t, 3) for d in t.detections]) for t in reference.tracks]
    for shot in followed.shots:   # each shot's face is found at its first analysed frame
        assert any(abs(t.detections[0].t - shot.start) < 1e-6 for t in followed.tracks if t.shot == shot.index)
    for mine, theirs in zip(followed.tracks, reference.tracks, strict=True):
        iou = [box_iou(np.array(a.box), np.array(b.box))[0, 0] for a, b in zip(mine.detections, theirs.detections, strict=True)]
        assert min(iou) > 0.8
    assert sum(searched) <= 0.6 * followed.frames_analysed
    assert len(followed.characters) == len(reference.characters) == 5


def test_tracks_are_published_as_they_close_and_settled_means_all_known(extractor, media_dir, tmp_path):
    """A montage with a cut every 1.5 s: the pass hands out each track once, unchanged from the result, while
    it still runs; whenever it says "settled at t", every track of the result starting before t is out."""
    from tests.extractors import edited_media as em

    path = em.write_edit(em.montage(0.0), media_dir, tmp_path / "montage.mp4")
    calls = []   # (ids published so far, settled, detections of each published track then)
    published: dict[str, object] = {}

    def on_tracks(closed, settled):
        for track in closed:
            assert track.id not in published
            published[track.id] = (track, len(track.detections))
        calls.append((set(published), settled))

    result = extractor(path, on_tracks=on_tracks)
    assert set(published) == {t.id for t in result.tracks}
    for track in result.tracks:   # the same object, not changed after it was handed out
        assert published[track.id][0] is track and published[track.id][1] == len(track.detections)
    settled_times = [settled for _, settled in calls]
    assert settled_times == sorted(settled_times) and settled_times[-1] == np.inf
    mid_pass = [(ids, settled) for ids, settled in calls if np.isfinite(settled) and ids]
    assert len({frozenset(ids) for ids, _ in mid_pass}) >= 3   # tracks went out during the pass, not at its end
    for ids, settled in calls:
        assert {t.id for t in result.tracks if t.start < settled} <= ids, settled


def test_a_characters_sequence_is_its_faces_in_the_span_the_surer_one_where_two_tracks_meet():
    from extractors.contracts import Character, FaceTrack, VideoInfo
    from extractors.visual_features import VisualResult

    def track(track_id, times, score):
        return FaceTrack(track_id, 0, [FaceDetection(float(t), (0.0, 0.0, 10.0, 10.0), score,
                                                     np.zeros((5, 2), np.float32)) for t in times])

    tracks = [track("T0", [0.0, 0.25, 0.5, 0.75], 0.9), track("T1", [0.5, 0.75, 1.0], 0.95),
              track("T2", [0.25, 2.0], 0.99)]
    # every row of track Tk holds k, so a row says which track it came from
    features = {t.id: np.full((len(t.detections), D_VISUAL), float(k), np.float32) for k, t in enumerate(tracks)}
    info = VideoInfo("x.mp4", 3.0, 25.0, 64, 64, 0, False, None, None)
    result = VisualResult(info, [], tracks, [Character("C0", ["T0", "T1"], None, np.zeros(3, np.float32)),
                                             Character("C1", ["T2"], None, np.zeros(3, np.float32))], features, 12)
    times, rows = result.sequence("C0", 0.25, 1.0)   # start included, end left out
    np.testing.assert_array_equal(times, [0.25, 0.5, 0.75])
    np.testing.assert_array_equal(rows[:, 0], [0.0, 1.0, 1.0])   # T1 is surer where both have a face
    rows[:] = -1.0                                                # a caller's change stays with the caller
    np.testing.assert_array_equal(result.sequence("C0", 0.0, 9.0)[1][:, 0], [0.0, 0.0, 1.0, 1.0, 1.0])
    assert result.sequence("C1", 0.3, 1.9)[0].shape == (0,) and result.sequence("C1", 0.3, 1.9)[1].shape == (0, D_VISUAL)
    with pytest.raises(KeyError):
        result.sequence("C9", 0.0, 1.0)
