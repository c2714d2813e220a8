"""Mouth opening of every face on screen inside the speech windows: the measuring half of "who is talking".

The video is decoded only inside the speech windows (each speech segment plus a little context, windows that
touch merged) at ``sync_fps``, and every face track on screen at a frame gets the inner-lip gap of its face
mesh there (:class:`MouthSamples`). :mod:`extractors.active_speaker` then correlates those series with the
speech envelope.

The measurement can run while the visual pass is still going. A window needs every track that can be on
screen in it, and a track is final once it closes (a cut, or its face gone too long), so the visual pass
publishes closed tracks and the time before which no track is still open into a :class:`TrackFeed`, and a
window is measured as soon as that time has passed its end (:class:`MouthMeasurement`). The pipeline does
this on the core the audio chain leaves free, so most of the measuring is done by the time the visual pass
ends. The samples are the same whichever way the windows were taken: each window is decoded and measured
alone, from the same tracks.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from extractors.contracts import FaceDetection, FaceTrack, SpeechSegment
from extractors.io import return_freed_memory
from extractors.media import iter_frames

log = logging.getLogger(__name__)

# A face is placed at most this far before its track's first or after its last detection: tracks end at
# cuts, and past a cut the box would frame someone else.
TRACK_EDGE_S = 0.15

# (RGB frame, faces in it) -> [N] mouth opening (NaN where no mouth could be measured)
MouthMeter = Callable[[np.ndarray, Sequence[FaceDetection]], np.ndarray]


def mesh_mouth_meter(model_path: str | os.PathLike | None = None, threads: int | None = 1,
                     min_presence: float = 0.5) -> MouthMeter:
    """Inner-lip opening from the 468-point face mesh; NaN where the mesh sees no face."""
    from extractors.face_mesh import FaceMesh, mesh_geometry

    mesh = FaceMesh(model_path=model_path, threads=threads or 1)

    def measure(image: np.ndarray, detections: Sequence[FaceDetection]) -> np.ndarray:
        results = mesh(image, detections)
        return np.array([mesh_geometry(r)[0] if r.presence >= min_presence else np.nan for r in results])

    return measure


def speech_windows(segments: Sequence[SpeechSegment], context_s: float) -> list[tuple[float, float]]:
    """(start, end) of the stretches to decode: each segment widened by ``context_s``, overlapping ones merged,
    in time order. Splitting a segment (at a speaker turn, at a pause) never reaches outside its window."""
    merged: list[list[float]] = []
    for start, end in sorted((s.start - context_s, s.end + context_s) for s in segments):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


# ------------------------------------------------------------------------------------------ tracks


def interpolate_detection(track: FaceTrack, t: float, max_gap_s: float = 0.6,
                          times: np.ndarray | None = None) -> FaceDetection | None:
    """The track's face at time ``t`` (box and landmarks linear between its detections), None outside it.

    The visual pass samples faces at a few frames per second; synchrony needs every frame, so the face is
    placed between its neighbouring detections (the face mesh crops with a margin, so this is enough).
    """
    times = np.array([d.t for d in track.detections]) if times is None else times   # [N] detection times
    if t < times[0] - TRACK_EDGE_S or t > times[-1] + TRACK_EDGE_S:
        return None
    i = int(np.searchsorted(times, t))
    if i <= 0 or i >= len(times):
        d = track.detections[0 if i <= 0 else -1]
        return FaceDetection(t, d.box, d.score, d.landmarks)
    a, b = track.detections[i - 1], track.detections[i]
    if b.t - a.t > max_gap_s:
        d = a if t - a.t < b.t - t else b
        return FaceDetection(t, d.box, d.score, d.landmarks)
    w = (t - a.t) / max(b.t - a.t, 1e-9)
    box = tuple(float((1 - w) * p + w * q) for p, q in zip(a.box, b.box, strict=True))
    landmarks = ((1 - w) * np.asarray(a.landmarks) + w * np.asarray(b.landmarks)).astype(np.float32)
    return FaceDetection(t, box, min(a.score, b.score), landmarks)


class TrackSweep:
    """The faces of the tracks on screen at time t, for times that mostly increase (a frame loop).

    Keeps the tracks that can be live (from ``TRACK_EDGE_S`` before their first detection to as long after
    their last), so each frame costs the tracks on screen, not every track of the video (an hour of TV
    holds thousands). A time earlier than the last one restarts the sweep.
    """

    def __init__(self, tracks: Sequence[FaceTrack]):
        self._tracks = sorted((t for t in tracks if t.detections), key=lambda t: t.detections[0].t)
        self._times = {t.id: np.array([d.t for d in t.detections]) for t in self._tracks}
        self._restart()

    def _restart(self) -> None:
        self._next = 0                       # first track not yet admitted
        self._live: list[FaceTrack] = []
        self._last_t = -np.inf

    def faces_at(self, t: float) -> list[tuple[FaceTrack, FaceDetection]]:
        """(track, its face at ``t``) for every track on screen then, in order of track start."""
        if t < self._last_t:
            self._restart()
        self._last_t = t
        while self._next < len(self._tracks) and self._tracks[self._next].detections[0].t - TRACK_EDGE_S <= t:
            self._live.append(self._tracks[self._next])
            self._next += 1
        self._live = [track for track in self._live if t <= track.detections[-1].t + TRACK_EDGE_S]
        faces = [(track, interpolate_detection(track, t, times=self._times[track.id])) for track in self._live]
        return [(track, face) for track, face in faces if face is not None]


class TrackFeed:
    """The face tracks of one video as a visual pass closes them, and how far in time the set is complete.

    ``settled``: every track whose first detection is earlier than this has closed and been published
    (or dropped as spurious), so the faces on screen before it are final. A feed made from a finished
    pass's tracks is settled to infinity.
    """

    def __init__(self, tracks: Sequence[FaceTrack] | None = None):
        self._changed = threading.Condition()
        self._tracks: list[FaceTrack] = list(tracks or [])
        self._settled = np.inf if tracks is not None else -np.inf

    @property
    def settled(self) -> float:
        with self._changed:
            return self._settled

    def publish(self, closed: Sequence[FaceTrack], settled: float) -> None:
        """Tracks that just closed (final: never changed again) and the new settled time."""
        with self._changed:
            self._tracks.extend(closed)
            self._settled = max(self._settled, float(settled))
            self._changed.notify_all()

    def finish(self, tracks: Sequence[FaceTrack]) -> None:
        """The pass is over: ``tracks`` is every track it kept."""
        with self._changed:
            self._tracks = list(tracks)
            self._settled = np.inf
            self._changed.notify_all()

    def release(self) -> None:
        """Lets go of the tracks once nothing will read them again (later calls see none)."""
        with self._changed:
            self._tracks = []
            self._settled = np.inf
            self._changed.notify_all()

    def tracks_until(self, t: float, poll: Callable[[], None] | None = None,
                     interval_s: float = 0.25) -> list[FaceTrack]:
        """Every track that can be on screen at or before ``t``, once all of them are known (blocks until
        then). ``poll`` is called while waiting, at least every ``interval_s``: it may raise to give up."""
        with self._changed:
            while self._settled <= t + TRACK_EDGE_S:
                if poll is not None:
                    poll()
                self._changed.wait(interval_s)
            return list(self._tracks)


# ------------------------------------------------------------------------------------------ samples


@dataclass
class MouthSamples:
    """Mouth openings at the sampling instants of the speech windows.

    ``times``: [N] seconds, increasing; ``openings[i]``: track id -> mouth opening at ``times[i]`` for every
    track on screen then (NaN: the mesh saw no face in the box).
    """

    times: np.ndarray
    openings: list[dict[str, float]]

    def serialize(self) -> dict:
        return {"samples": len(self.times),
                "tracks": sorted({track_id for found in self.openings for track_id in found})}

    def arrays(self) -> dict[str, np.ndarray]:
        """The samples as flat arrays (beside :meth:`serialize`): one row per (instant, track) measured."""
        index = {track_id: k for k, track_id in enumerate(self.serialize()["tracks"])}
        rows = [(i, index[track_id], value) for i, found in enumerate(self.openings) for track_id, value in found.items()]
        return {"times": np.asarray(self.times, dtype=np.float64),
                "sample": np.array([r[0] for r in rows], dtype=np.int64),
                "track": np.array([r[1] for r in rows], dtype=np.int64),
                "opening": np.array([r[2] for r in rows], dtype=np.float64)}

    @classmethod
    def from_dict(cls, data: dict, arrays: dict[str, np.ndarray]) -> MouthSamples:
        """Inverse of :meth:`serialize` with :meth:`arrays`."""
        tracks = list(data["tracks"])
        openings: list[dict[str, float]] = [{} for _ in range(int(data["samples"]))]
        for i, k, value in zip(arrays["sample"].tolist(), arrays["track"].tolist(), arrays["opening"].tolist(),
                               strict=True):
            openings[i][tracks[k]] = value
        return cls(np.asarray(arrays["times"], dtype=np.float64), openings)

    @classmethod
    def empty(cls) -> MouthSamples:
        return cls(np.zeros(0, dtype=np.float64), [])

    def by_segment(self, segments: Sequence[SpeechSegment], context_s: float, min_frames: int
                   ) -> tuple[dict[str, np.ndarray], dict[tuple[str, str], np.ndarray]]:
        """(segment id -> sample times, (segment id, track id) -> mouth opening per sample, NaN where the track
        was not measured) for the samples within each segment plus ``context_s``; a track with fewer than
        ``min_frames`` measured samples in a segment gets no series. Only the tracks seen in a segment's
        samples are looked at."""
        times: dict[str, np.ndarray] = {}
        series: dict[tuple[str, str], np.ndarray] = {}
        for segment in segments:
            first = int(np.searchsorted(self.times, segment.start - context_s, side="left"))
            last = int(np.searchsorted(self.times, segment.end + context_s, side="left"))
            times[segment.id] = self.times[first:last]
            inside = self.openings[first:last]
            for track_id in dict.fromkeys(track_id for openings in inside for track_id in openings):
                values = np.array([openings.get(track_id, np.nan) for openings in inside], dtype=np.float64)
                if np.isfinite(values).sum() >= min_frames:
                    series[(segment.id, track_id)] = values
        return times, series


class _Stopped(Exception):
    """Another thread of the measurement failed or was interrupted: take no more windows."""


class MouthMeasurement:
    """The speech windows of one video, measured by whichever threads call :meth:`work`.

    Windows are handed out in time order; a thread that takes one waits until the feed has every track
    that can be on screen in it, decodes it at ``sync_fps`` and measures each live face with its own meter
    (a face mesh serves one thread). A failure in any thread (``progress`` or ``poll`` raising included)
    stops the others after the window they are in; :meth:`wait` re-raises it.
    """

    def __init__(self, path: str | os.PathLike, windows: Sequence[tuple[float, float]], feed: TrackFeed,
                 sync_fps: float, progress: Callable[[float, float], None] | None = None):
        self.path, self.windows, self.feed, self.sync_fps = path, list(windows), feed, float(sync_fps)
        self.progress = progress
        self._lock = threading.Condition()
        self._next = 0
        self._found: list[list[tuple[float, dict[str, float]]] | None] = [None] * len(self.windows)
        self._running = 0
        self._error: BaseException | None = None
        self._total = sum(b - a for a, b in self.windows) or 1.0
        self._done_s = 0.0

    @property
    def fraction(self) -> float:
        """Share of the windows' seconds measured so far, in [0, 1]."""
        with self._lock:
            return self._done_s / self._total

    def _take(self) -> int | None:
        with self._lock:
            if self._error is not None or self._next >= len(self.windows):
                return None
            self._next += 1
            self._running += 1
            return self._next - 1

    def _measure(self, window: tuple[float, float], meter: MouthMeter, poll) -> list[tuple[float, dict[str, float]]]:
        start, end = window
        tracks = self.feed.tracks_until(end, poll)
        on_screen = [t for t in tracks if t.detections and t.start - TRACK_EDGE_S <= end
                     and t.end + TRACK_EDGE_S >= start]
        if not on_screen:   # off-screen speech: no face to measure, nothing to decode (attribution needs none)
            return []
        sweep = TrackSweep(on_screen)
        found = []
        for frame in iter_frames(self.path, self.sync_fps, start=max(0.0, start), end=end):
            live = sweep.faces_at(frame.t)
            openings: dict[str, float] = {}
            if live:
                values = meter(frame.image, [face for _, face in live])
                openings = {track.id: float(v) for (track, _), v in zip(live, values, strict=True)}
            found.append((frame.t, openings))
        return_freed_memory()   # the window's decoder and frames, freed in this thread's heap, leave the process
        return found

    def work(self, meter: MouthMeter, poll: Callable[[], None] | None = None) -> None:
        """Measures windows until none is left to take (or another thread failed); ``poll`` is called while
        waiting for tracks and between windows, and may raise to stop."""
        def check() -> None:
            if self._error is not None:
                raise _Stopped
            if poll is not None:
                poll()

        while (index := self._take()) is not None:
            try:
                check()
                found = self._measure(self.windows[index], meter, check)
                with self._lock:
                    self._found[index] = found
                    self._done_s += self.windows[index][1] - self.windows[index][0]
                    done = self._done_s
                if self.progress is not None:
                    self.progress(done, self._total)
            except _Stopped:
                raise
            except BaseException as error:
                self.stop(error)
                raise
            finally:
                with self._lock:
                    self._running -= 1
                    self._lock.notify_all()

    def stop(self, error: BaseException) -> None:
        """No more windows are taken; :meth:`wait` raises ``error`` (the first one given wins)."""
        with self._lock:
            if self._error is None:
                self._error = error
            self._lock.notify_all()

    def wait(self, poll: Callable[[], None] | None = None, interval_s: float = 0.25) -> MouthSamples:
        """Blocks until every window is measured (by any thread), then returns the samples in time order."""
        with self._lock:
            while self._error is None and (self._running or self._next < len(self.windows)):
                if poll is not None:
                    poll()
                self._lock.wait(interval_s)
            if self._error is not None:
                raise self._error
        samples = [sample for found in self._found for sample in found]
        return MouthSamples(np.array([t for t, _ in samples], dtype=np.float64), [o for _, o in samples])

    def run(self, meters: Sequence[MouthMeter]) -> MouthSamples:
        """Every window, one thread per meter; an error (or an interruption) drops the windows not started."""
        if len(meters) <= 1:
            try:
                self.work(meters[0])
            except _Stopped:
                pass
            return self.wait()
        pool = ThreadPoolExecutor(len(meters), thread_name_prefix="mouth")
        try:
            futures = [pool.submit(self.work, meter) for meter in meters]
            for future in futures:
                try:
                    future.result()
                except _Stopped:
                    pass
            return self.wait()
        except BaseException as error:   # an interruption here: the workers stop after their window
            self.stop(error)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
