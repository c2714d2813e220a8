"""The mouth measurement trailing a visual pass: the same samples as after it, never a window measured early."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from extractors.contracts import FaceDetection, FaceTrack, SpeechSegment
from extractors.mouth_motion import MouthMeasurement, TrackFeed, speech_windows

CLIP = "visualvoice_interview.mp4"


def _tracks() -> list[FaceTrack]:
    """Short tracks over the clip (one every ~1.3 s), each at a box that encodes its id; one starts 0.1 s after
    the first window ends, so its face is placed (0.15 s ahead of its first detection) inside that window."""
    tracks = []
    for i, start in enumerate(sorted([*np.arange(0.2, 16.5, 1.3), 1.8])):
        times = start + np.arange(0, 1.2, 0.25)
        tracks.append(FaceTrack(f"T{i}", i, [FaceDetection(float(t), (10.0 * i, 0.0, 10.0 * i + 50, 50.0), 1.0,
                                                           np.zeros((5, 2), np.float32)) for t in times]))
    return tracks


def box_meter(image, faces):
    """The left edge of each box: which tracks were live, without a face model."""
    return np.array([face.box[0] for face in faces], dtype=np.float64)


SEGMENTS = [SpeechSegment(f"s{i}", float(a), float(a + 0.8), "x", []) for i, a in enumerate((0.5, 3.0, 6.5, 10.0, 14.0))]


def _publish_like_a_visual_pass(feed: TrackFeed, tracks: list[FaceTrack], log: list, delay_s: float) -> None:
    """Each track goes out when the next starts (a cut), with the next one's start as settled time."""
    for track, following in zip(tracks, [*tracks[1:], None], strict=True):
        time.sleep(delay_s)
        settled = following.start if following is not None else np.inf
        feed.publish([track], settled)
        log.append(settled)


@pytest.mark.parametrize("workers", [1, 2])
def test_trailing_the_pass_gives_the_samples_of_a_finished_pass(media_dir, workers):
    tracks = _tracks()
    windows = speech_windows(SEGMENTS, 0.4)
    after = MouthMeasurement(media_dir / CLIP, windows, TrackFeed(tracks), 25.0).run([box_meter] * workers)
    feed, settled_log = TrackFeed(), []
    measured_at = []   # (window end, latest settled time published when its first frame was measured)

    def meter(image, faces):
        measured_at.append(settled_log[-1] if settled_log else -np.inf)
        return box_meter(image, faces)

    publisher = threading.Thread(target=_publish_like_a_visual_pass, args=(feed, tracks, settled_log, 0.15))
    publisher.start()
    trailing = MouthMeasurement(media_dir / CLIP, windows, feed, 25.0).run([meter] * workers)
    publisher.join()
    np.testing.assert_array_equal(trailing.times, after.times)
    assert trailing.openings == after.openings
    assert sum(1 for found in after.openings if found) > 100
    assert min(measured_at) > windows[0][1]   # nothing was measured before its tracks were settled
    assert measured_at[0] < np.inf            # ... and the first window did not wait for the whole pass


def test_a_failure_while_waiting_for_tracks_ends_the_measurement(media_dir):
    feed = TrackFeed()   # a visual pass that never settles anything

    class VisualFailed(Exception):
        pass

    def poll():
        raise VisualFailed

    measurement = MouthMeasurement(media_dir / CLIP, speech_windows(SEGMENTS, 0.4), feed, 25.0)
    with pytest.raises(VisualFailed):
        measurement.work(box_meter, poll)
    with pytest.raises(VisualFailed):
        measurement.wait()


def test_a_window_with_nobody_on_screen_is_not_decoded(media_dir, monkeypatch):
    """Off-screen speech (a narrator, a voice over a cutaway): no face can be measured, so no frame is read."""
    import extractors.mouth_motion as mouth_motion

    decoded, iter_frames = [], mouth_motion.iter_frames

    def counting_frames(path, fps, start=0.0, end=None):
        decoded.append((start, end))
        return iter_frames(path, fps, start=start, end=end)

    monkeypatch.setattr(mouth_motion, "iter_frames", counting_frames)
    on_screen = [track for track in _tracks() if track.start < 1.0]   # only in the first window (0.1-1.7 s)
    windows = speech_windows(SEGMENTS, 0.4)
    samples = MouthMeasurement(media_dir / CLIP, windows, TrackFeed(on_screen), 25.0).run([box_meter])
    assert decoded == [(windows[0][0], windows[0][1])]
    assert len(samples.times) > 20 and samples.times[-1] <= windows[0][1]


def test_each_decoded_window_hands_its_freed_memory_back(media_dir, monkeypatch):
    """A window's decoder and frames are freed in the measuring thread's own heap, where glibc keeps them resident
    until a trim (otherwise the visual pass's next one): each window decoded is trimmed after its last frame, so
    no window's buffers stay resident after it."""
    import extractors.mouth_motion as mouth_motion

    events, iter_frames = [], mouth_motion.iter_frames

    def logged_frames(path, fps, start=0.0, end=None):
        for frame in iter_frames(path, fps, start=start, end=end):
            events.append("frame")
            yield frame
        events.append("end")

    monkeypatch.setattr(mouth_motion, "iter_frames", logged_frames)
    monkeypatch.setattr(mouth_motion, "return_freed_memory", lambda: events.append("trim"))
    windows = speech_windows(SEGMENTS, 0.4)
    MouthMeasurement(media_dir / CLIP, windows, TrackFeed(_tracks()), 25.0).run([box_meter])
    ends = [i for i, event in enumerate(events) if event == "end"]
    assert len(ends) == len(windows)
    assert [events[i + 1] for i in ends] == ["trim"] * len(windows)
    assert events.count("trim") == len(windows)
