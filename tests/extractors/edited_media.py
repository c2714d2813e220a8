"""Edited test videos with known identities, cut with PyAV from the shared clips (../shared/media).

TV footage is cut: shot/reverse-shot, close-ups and wide shots of the same person, strangers one after
another. These re-edits give such footage with ground truth known from how it was cut: every shot
(:class:`Cut`) shows a window of a source clip, and every face whose centre falls in a labelled region of
the source is that person. Used by the identity tests (short edits) and benchmarks/identity_linking.py
(the whole :func:`identity_set`).

People in the shared clips: ``host`` (left panel of visualvoice_interview.mp4), ``guest`` (right panel),
``face1`` / ``face2`` (retalking_face1/2.mp4), ``reader`` (deep_lip_reading_demo.mp4); the crowd clip
(facenet_pytorch_video.mp4) is labelled by tracking it uncut (see :func:`crowd_labels`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from extractors.contracts import FaceTrack
from extractors.media import iter_frames

Box = tuple[float, float, float, float]   # x1, y1, x2, y2 in source pixels

INTERVIEW = "visualvoice_interview.mp4"
CROWD = "facenet_pytorch_video.mp4"
# Who is where in each single-shot source clip (regions in source pixels; None: the whole frame).
PEOPLE: dict[str, tuple[tuple[str, Box | None], ...]] = {
    INTERVIEW: (("host", (0, 0, 640, 720)), ("guest", (640, 0, 1280, 720))),
    "retalking_face1.mp4": (("face1", None),),
    "retalking_face2.mp4": (("face2", None),),
    "deep_lip_reading_demo.mp4": (("reader", None),),
}
# 16:9 windows of the interview that show one panel's face (found from the detections: host face
# x 275-508, y 121-431; guest x 730-1005, y 57-401), for shot/reverse-shot close-ups.
HOST_WINDOW: Box = (0, 90, 640, 450)
GUEST_WINDOW: Box = (640, 40, 1280, 400)


@dataclass(frozen=True)
class Cut:
    """One shot of an edit: ``source`` from ``start`` to ``end`` seconds, ``window`` of it fitted to the output.

    ``scale`` < 1 shrinks the fitted picture (a wider shot: smaller faces) around ``anchor``, the point of
    the output frame (fractions of width and height) where the window's centre lands. ``stretch`` fills
    the output frame instead, aspect ratio not kept (as broadcasts show 4:3 material stretched to 16:9).
    """

    source: str
    start: float
    end: float
    window: Box | None = None
    scale: float = 1.0
    anchor: tuple[float, float] = (0.5, 0.5)
    stretch: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Edit:
    name: str
    cuts: tuple[Cut, ...]
    size: tuple[int, int] = (1280, 720)     # output width, height
    fps: float = 10.0                       # enough for 4 analysed frames a second; cheap to write and read
    kind: str = "edit"                      # "shot-reverse-shot", "montage", "scales", "crowd"

    def cut_at(self, t: float) -> tuple[int, Cut, float]:
        """(cut index, cut, source time) of output time ``t``."""
        offset = 0.0
        for index, cut in enumerate(self.cuts):
            if t < offset + cut.duration - 1e-9 or index == len(self.cuts) - 1:
                return index, cut, cut.start + (t - offset)
            offset += cut.duration
        raise ValueError("an edit needs cuts")


@dataclass
class Placement:
    """Source window -> output frame: output = (source - window origin) * factor + offset, per axis."""

    window: Box
    factor: tuple[float, float]
    offset: tuple[float, float]

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        return ((x - self.offset[0]) / self.factor[0] + self.window[0], (y - self.offset[1]) / self.factor[1] + self.window[1])


def placement(cut: Cut, source_size: tuple[int, int], size: tuple[int, int]) -> Placement:
    window = cut.window or (0, 0, source_size[0], source_size[1])
    ww, wh = window[2] - window[0], window[3] - window[1]
    if cut.stretch:
        fx, fy = size[0] / ww * cut.scale, size[1] / wh * cut.scale
    else:
        fx = fy = min(size[0] / ww, size[1] / wh) * cut.scale
    cx, cy = cut.anchor[0] * size[0], cut.anchor[1] * size[1]
    return Placement(window, (fx, fy), (cx - ww * fx / 2, cy - wh * fy / 2))


def _render(image: np.ndarray, place: Placement, size: tuple[int, int]) -> np.ndarray:
    """The output frame: only the window of ``image``, scaled and placed on black."""
    x1, y1, x2, y2 = (int(v) for v in place.window)
    width, height = max(1, round((x2 - x1) * place.factor[0])), max(1, round((y2 - y1) * place.factor[1]))
    interpolation = cv2.INTER_AREA if max(place.factor) < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(np.ascontiguousarray(image[y1:y2, x1:x2]), (width, height), interpolation=interpolation)
    out = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    left, top = round(place.offset[0]), round(place.offset[1])
    # Paste, clipping whatever falls outside the output frame.
    ox1, oy1 = max(left, 0), max(top, 0)
    ox2, oy2 = min(left + width, size[0]), min(top + height, size[1])
    if ox2 > ox1 and oy2 > oy1:
        out[oy1:oy2, ox1:ox2] = scaled[oy1 - top : oy2 - top, ox1 - left : ox2 - left]
    return out


def write_edit(edit: Edit, media_dir: Path, out: Path) -> Path:
    """Writes ``edit`` as an H.264 MP4 at ``out`` (frames sampled from each source at ``edit.fps``)."""
    container = av.open(str(out), mode="w")
    try:
        stream = container.add_stream("libx264", rate=Fraction(edit.fps).limit_denominator(1000))
        stream.width, stream.height = edit.size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        produced = 0
        for cut in edit.cuts:
            frames = iter_frames(media_dir / cut.source, fps=edit.fps, start=cut.start, end=cut.end)
            wanted = round(cut.duration * edit.fps)
            place = None
            image = None
            for k in range(wanted):
                frame = next(frames, None)
                if frame is not None:
                    image = frame.image
                elif image is None:
                    raise ValueError(f"{cut.source} has no frames in {cut.start}-{cut.end} s")
                if place is None:
                    place = placement(cut, (image.shape[1], image.shape[0]), edit.size)
                video_frame = av.VideoFrame.from_ndarray(_render(image, place, edit.size), format="rgb24")
                video_frame.pts = produced + k
                container.mux(stream.encode(video_frame))
            produced += wanted
            frames.close()
        container.mux(stream.encode())
    finally:
        container.close()
    return out


# ------------------------------------------------------------------------------------ ground truth


@dataclass
class LabelledTrack:
    track_id: str
    person: str | None     # None: the track's faces could not be attributed (unknown truth)


def label_tracks(edit: Edit, tracks: list[FaceTrack], source_sizes: dict[str, tuple[int, int]],
                 crowd: Callable[[float, tuple[float, float]], str | None] | None = None) -> dict[str, str | None]:
    """{track id: person} from where each face of the track sits in its source (majority over its faces)."""
    labels: dict[str, str | None] = {}
    for track in tracks:
        votes: dict[str | None, int] = {}
        for detection in track.detections:
            _, cut, source_t = edit.cut_at(detection.t)
            place = placement(cut, source_sizes[cut.source], edit.size)
            x1, y1, x2, y2 = detection.box
            point = place.to_source((x1 + x2) / 2, (y1 + y2) / 2)
            person = None
            if cut.source == CROWD:
                person = crowd(source_t, point) if crowd else None
            else:
                for name, region in PEOPLE[cut.source]:
                    w, h = source_sizes[cut.source]
                    rx1, ry1, rx2, ry2 = region or (0, 0, w, h)
                    if rx1 <= point[0] < rx2 and ry1 <= point[1] < ry2:
                        person = name
            votes[person] = votes.get(person, 0) + 1
        labels[track.id] = max(votes, key=votes.get)
    return labels


@dataclass
class CrowdReference:
    """People of the uncut crowd clip: tracks of it at the analysis times, and which of them share a frame."""

    tracks: list[FaceTrack]
    co_occurring: set[tuple[str, str]] = field(default_factory=set)

    def person_at(self, t: float, point: tuple[float, float]) -> str | None:
        """The reference track whose face at the nearest sampled time contains ``point``."""
        best, best_gap = None, 0.3   # at most about one analysis step away in time
        for track in self.tracks:
            for detection in track.detections:
                gap = abs(detection.t - t)
                x1, y1, x2, y2 = detection.box
                if gap < best_gap and x1 <= point[0] <= x2 and y1 <= point[1] <= y2:
                    best, best_gap = track.id, gap
        return best

    def known_different(self, a: str, b: str) -> bool:
        """Two reference tracks are surely two people only when they are on screen together."""
        return (a, b) in self.co_occurring or (b, a) in self.co_occurring


def crowd_reference(media_dir: Path, detector, fps: float = 4.0) -> CrowdReference:
    from extractors.identity import co_occurring_pairs
    from extractors.tracking import FaceTracker

    tracker = FaceTracker()
    for frame in iter_frames(media_dir / CROWD, fps=fps):
        tracker.update(frame.t, 0, detector.detect([frame.image], [frame.t])[0], frame.image)
    tracks = tracker.finish()
    pairs = {(tracks[i].id, tracks[j].id) for i, j in co_occurring_pairs(tracks)}
    return CrowdReference(tracks, pairs)


# ---------------------------------------------------------------------------------------- the set


def shot_reverse_shot(stretch: bool = True) -> Edit:
    """Interview host half 0-2 s, guest half 2-4 s, host half 4-6 s, each scaled to 1280x720.

    ``stretch``: each 640x720 half fills the frame (faces twice as wide, as issue 9 measured it: host and
    guest 0.50 apart); otherwise a 16:9 window of each half around its face is enlarged 2x.
    """
    halves = (PEOPLE[INTERVIEW][0][1], PEOPLE[INTERVIEW][1][1]) if stretch else (HOST_WINDOW, GUEST_WINDOW)
    return Edit("interview_shot_reverse_shot" + ("_stretched" if stretch else ""), (
        Cut(INTERVIEW, 0.0, 2.0, halves[0], stretch=stretch), Cut(INTERVIEW, 2.0, 4.0, halves[1], stretch=stretch),
        Cut(INTERVIEW, 4.0, 6.0, halves[0], stretch=stretch),
    ), kind="shot-reverse-shot")


def montage(offset: float = 0.0, seconds: float = 1.5, order: tuple[int, ...] = (0, 1, 2, 3, 4)) -> Edit:
    """Five different people one after another (each once), from the four single-shot clips."""
    shots = (
        Cut("deep_lip_reading_demo.mp4", 0.0, 0.88),
        Cut("retalking_face1.mp4", 0.5 + offset, 0.5 + offset + seconds),
        Cut(INTERVIEW, 1.0 + offset, 1.0 + offset + seconds, HOST_WINDOW),
        Cut("retalking_face2.mp4", 0.5 + offset, 0.5 + offset + seconds),
        Cut(INTERVIEW, 6.0 + offset, 6.0 + offset + seconds, GUEST_WINDOW),
    )
    return Edit(f"montage_{offset:g}_{''.join(map(str, order))}", tuple(shots[k] for k in order), kind="montage")


def same_person_scales(source: str, window: Box | None, scales: tuple[float, ...], seconds: float = 1.5,
                       start: float = 0.5) -> Edit:
    """One person in shots of different sizes (close-up, medium, ...), placed off-centre as framing varies."""
    anchors = ((0.5, 0.5), (0.35, 0.45), (0.65, 0.55), (0.4, 0.5))
    cuts = tuple(Cut(source, start + k * seconds, start + (k + 1) * seconds, window, scale, anchors[k % len(anchors)])
                 for k, scale in enumerate(scales))
    label = Path(source).stem + ("_host" if window == HOST_WINDOW else "_guest" if window == GUEST_WINDOW else "")
    return Edit(f"scales_{label}_{'_'.join(f'{s:g}' for s in scales)}", cuts, kind="scales")


def crowd_cut() -> Edit:
    """The crowd clip whole for 2 s, then a closer shot (the lower middle, where the faces are, enlarged 2x)."""
    return Edit("crowd_wide_then_close", (
        Cut(CROWD, 0.0, 2.0), Cut(CROWD, 2.0, 4.2, (480, 540, 1440, 1080)),
    ), size=(1920, 1080), kind="crowd")


def identity_set() -> list[Edit]:
    """The whole labelled set the benchmark measures (about 60 s of video)."""
    edits = [shot_reverse_shot(), shot_reverse_shot(stretch=False), montage(0.0), montage(1.5, order=(4, 2, 0, 3, 1)), montage(3.0, order=(1, 3, 4, 0, 2))]
    for source, window in ((INTERVIEW, HOST_WINDOW), (INTERVIEW, GUEST_WINDOW), ("retalking_face1.mp4", None),
                           ("retalking_face2.mp4", None)):
        edits.append(same_person_scales(source, window, (1.0, 0.45, 1.0)))   # close-up, medium, close-up
        edits.append(same_person_scales(source, window, (0.6, 0.25)))        # medium, wide (small faces)
    edits.append(crowd_cut())
    return edits


def source_sizes(media_dir: Path, edits: list[Edit]) -> dict[str, tuple[int, int]]:
    sizes = {}
    for name in {cut.source for edit in edits for cut in edit.cuts}:
        with av.open(str(media_dir / name)) as container:
            stream = container.streams.video[0]
            sizes[name] = (stream.width, stream.height)
    return sizes


def track_pairs(labels: dict[str, str | None], characters: dict[str, str], known_different=None):
    """Yields (same person, same character) for each pair of tracks whose truth is known."""
    ids = sorted(labels)
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            a, b = labels[ids[i]], labels[ids[j]]
            if a is None or b is None:
                continue
            if a != b and known_different is not None and not known_different(a, b):
                continue
            yield a == b, characters.get(ids[i]) == characters.get(ids[j])


def face_size(track: FaceTrack) -> float:
    """Median face size of a track (square root of the box area), in output pixels."""
    return float(np.median([math.sqrt((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])) for d in track.detections]))


def stream_copy_period(clip: Path) -> float:
    """Seconds between the starts of two copies in :func:`repeat_by_stream_copy`."""
    with av.open(str(clip)) as source:
        return 0.2 + max(float(s.start_time * s.time_base + s.duration * s.time_base) for s in source.streams
                         if s.duration is not None)


def repeat_by_stream_copy(clip: Path, copies: int, out: Path) -> float:
    """``clip`` repeated ``copies`` times into ``out`` by copying its packets with shifted timestamps (no
    re-encode); returns the period in seconds. Every stream shifts by the same period, 0.2 s more than the
    longest stream (B-frames and AAC priming start before 0), so sound and picture stay in sync and each
    join leaves a hole in the audio timestamps, as stream-copied broadcast material does."""
    period = stream_copy_period(clip)
    with av.open(str(out), "w") as output:
        with av.open(str(clip)) as source:
            streams = {s.index: output.add_stream_from_template(s) for s in source.streams if s.type in ("video", "audio")}
        for copy in range(copies):
            with av.open(str(clip)) as source:
                for packet in source.demux(*[source.streams[i] for i in streams]):
                    if packet.dts is None:
                        continue
                    shift = int(round(Fraction(copy * period) / packet.time_base))
                    packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                    packet.stream = streams[packet.stream.index]
                    output.mux(packet)
    return period
