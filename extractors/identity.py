"""Characters: face tracks clustered into people across the whole video, optionally named by a cast file.

Identity embeddings come from dlib's ResNet face descriptor (face-recognition-models ships it), on chips
aligned with dlib's 5-point predictor; facenet-pytorch's InceptionResnetV1 (VGGFace2) is used only when
asked for (``embedder="facenet"``; its threshold is not calibrated here). Each track is embedded from a
few of its best faces, cut and embedded when the track closes, so no face image is held longer than
its track lives. Tracks are linked by average-linkage agglomeration on the median distance between their
chips, with a calibrated threshold and the cannot-link constraint that two tracks seen in the same frame
are two people. A track none of whose faces is large, sharp and frontal enough to give a reliable
descriptor gets no vote: it stays its own character rather than joining a wrong one.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from extractors.contracts import Character, FaceDetection, FaceTrack
from extractors.errors import ExtractorError, MediaError, ModelNotFoundError
from extractors.model_store import resolve_model

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------- embedders


class FaceEmbedder(Protocol):
    name: str
    distance_threshold: float   # L2 distance between unit embeddings below which two faces are one person

    def chip(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray:
        """The aligned face image the model embeds (kept per track until embedding)."""

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        """[N, D] float32 unit-norm embeddings of chips."""


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class DlibFaceEmbedder:
    """dlib's 128-d ResNet descriptor on 150x150 chips aligned by the 5-point shape predictor."""

    name = "dlib-face-descriptor"
    # dlib's documented same-person threshold is 0.6 on raw descriptors; their norm is about 1.4 on the
    # shared clips (1.32-1.55), so on the unit vectors used here 0.6 means about 0.43. Measured on the
    # labelled identity set (benchmarks/identity_linking.py): the median chip distance of one person
    # across shots and scales (0.25x to 2x) is at most about 0.30, of two different people with reliable
    # faces at least about 0.44 (many are 0.50-0.70). 0.40 sits between, on dlib's strict side.
    distance_threshold = 0.40

    def __init__(self, descriptor: str | Path | None = None, landmarks: str | Path | None = None):
        import dlib

        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(resolve_model("dlib-landmarks-5", landmarks)))
        self.model = dlib.face_recognition_model_v1(str(resolve_model("dlib-face-descriptor", descriptor)))

    def chip(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray:
        x1, y1, x2, y2 = (int(round(v)) for v in detection.box)
        shape = self.predictor(image, self._dlib.rectangle(x1, y1, x2, y2))
        return self._dlib.get_face_chip(image, shape, size=150, padding=0.25)

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, 128), dtype=np.float32)
        descriptors = self.model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return _unit(np.array([np.array(d) for d in descriptors]))


class FacenetFaceEmbedder:
    """facenet-pytorch InceptionResnetV1 (VGGFace2) on 160x160 crops, as facenet's MTCNN(margin=20) makes them."""

    name = "facenet-vggface2"
    # facenet's usual threshold on unit embeddings is 1.1 (its examples); 1.0 is a guess, not calibrated
    # here (the VGGFace2 weights cannot be fetched offline), so facenet is used only when asked for.
    distance_threshold = 1.0

    def __init__(self, weights: str | Path | None = None, device: str | None = None, image_size: int = 160, margin: int = 20):
        path = resolve_model("facenet-vggface2", weights)
        from extractors.faces import import_facenet

        import_facenet()  # facenet_pytorch's package import needs torchvision or the temporary stand-in
        from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            num_classes = state["logits.weight"].shape[0] if "logits.weight" in state else None
            self.model = InceptionResnetV1(pretrained=None, classify=False, num_classes=num_classes)
            self.model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, AttributeError, OSError, pickle.UnpicklingError) as error:
            raise ModelNotFoundError(f"{path} is not a usable facenet VGGFace2 state dict ({error})") from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = self.model.to(self.device).eval()
        self.image_size, self.margin = image_size, margin

    def chip(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray:
        x1, y1, x2, y2 = detection.box
        margin_x = self.margin * (x2 - x1) / (self.image_size - self.margin)
        margin_y = self.margin * (y2 - y1) / (self.image_size - self.margin)
        height, width = image.shape[:2]
        box = (int(max(x1 - margin_x / 2, 0)), int(max(y1 - margin_y / 2, 0)),
               int(min(x2 + margin_x / 2, width)), int(min(y2 + margin_y / 2, height)))
        crop = image[box[1] : box[3], box[0] : box[2]]
        return cv2.resize(crop, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)

    @torch.inference_mode()
    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, 512), dtype=np.float32)
        x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()  # [N, 3, 160, 160]
        x = (x - 127.5) / 128.0                                             # facenet's fixed standardisation
        return _unit(self.model(x.to(self.device)).cpu().numpy())


EMBEDDERS = ("auto", "dlib", "facenet")


def face_embedder_name(prefer: str = "auto") -> str:
    """The model :func:`load_face_embedder` picks for ``prefer``, without loading it."""
    if prefer not in EMBEDDERS:
        raise ValueError(f"unknown face embedder {prefer!r}; use {', '.join(EMBEDDERS)}")
    return FacenetFaceEmbedder.name if prefer == "facenet" else DlibFaceEmbedder.name


def load_face_embedder(prefer: str = "auto", *, descriptor: str | Path | None = None,
                       landmarks: str | Path | None = None, facenet_weights: str | Path | None = None,
                       device: str | None = None) -> FaceEmbedder:
    """dlib's descriptor for ``"auto"`` and ``"dlib"``; facenet only when asked for by name.

    ``"auto"`` never switches to facenet because its weights happen to sit in the torch cache: the
    clustering threshold is calibrated for dlib, not for facenet. Explicit model paths override the model
    store; ``device`` is for facenet (dlib runs on the CPU).
    """
    if prefer not in EMBEDDERS:
        raise ValueError(f"unknown face embedder {prefer!r}; use {', '.join(EMBEDDERS)}")
    if prefer == "facenet":
        log.warning("facenet embeddings: the clustering threshold %.2f is not calibrated on labelled footage",
                    FacenetFaceEmbedder.distance_threshold)
        return FacenetFaceEmbedder(facenet_weights, device=device)
    return DlibFaceEmbedder(descriptor, landmarks)


# -------------------------------------------------------------------------------- chips per track


@dataclass
class ChipGate:
    """Which faces are reliable enough to vote on identity (the others keep their track apart).

    Measured on the shared clips: dlib descriptors of faces under about 60 px (crowd faces of 37-61 px)
    scatter as far within one person (up to 0.5) as between people (0.21-0.45); strong blur (Gaussian
    sigma 4) moves a descriptor by up to 0.4; a face turned to profile puts dlib's alignment off.
    """

    min_face_pixels: float = 64.0   # square root of the box area, in source pixels (the chip is 150 px)
    min_frontal: float = 0.4        # 1 - |nose offset from the eye midpoint| / eye gap (1: frontal)
    min_sharpness: float = 5.0      # variance of the Laplacian of the grey 150 px chip

    def geometry_ok(self, detection: FaceDetection) -> bool:
        return face_size(detection) >= self.min_face_pixels and frontality(detection) >= self.min_frontal

    def sharp_enough(self, chip: np.ndarray) -> bool:
        return chip_sharpness(chip) >= self.min_sharpness


def face_size(detection: FaceDetection) -> float:
    x1, y1, x2, y2 = detection.box
    return math.sqrt(max(x2 - x1, 0) * max(y2 - y1, 0))


def frontality(detection: FaceDetection) -> float:
    """1 for a frontal face (nose halfway between the eyes, horizontally), falling to 0 as the head turns."""
    eye_l, eye_r, nose = detection.landmarks[0], detection.landmarks[1], detection.landmarks[2]
    eye_gap = max(float(np.linalg.norm(eye_r - eye_l)), 1e-6)
    return max(0.0, 1.0 - abs(float(nose[0] - (eye_l[0] + eye_r[0]) / 2)) / eye_gap)


def chip_sharpness(chip: np.ndarray) -> float:
    grey = cv2.cvtColor(np.ascontiguousarray(chip), cv2.COLOR_RGB2GRAY) if chip.ndim == 3 else chip
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_quality(detection: FaceDetection) -> float:
    """Prefers confident, large, frontal faces: score x size (capped at 120 px) x eye-level symmetry."""
    size = min(1.0, face_size(detection) / 120.0)
    return detection.score * size * (0.5 + 0.5 * frontality(detection))


def face_region(image: np.ndarray, detection: FaceDetection, margin: float = 0.6) -> tuple[np.ndarray, FaceDetection]:
    """A copy of the face with ``margin`` box sizes of context each side, and the detection in its coordinates.

    Keeping this instead of the frame lets chips be made only for the faces finally kept.
    """
    x1, y1, x2, y2 = detection.box
    w, h = x2 - x1, y2 - y1
    height, width = image.shape[:2]
    left, top = int(max(0, x1 - margin * w)), int(max(0, y1 - margin * h))
    right, bottom = int(min(width, x2 + margin * w + 1)), int(min(height, y2 + margin * h + 1))
    shift = np.array([left, top], dtype=np.float32)
    shifted = FaceDetection(t=detection.t, box=(x1 - left, y1 - top, x2 - left, y2 - top), score=detection.score,
                            landmarks=np.asarray(detection.landmarks, dtype=np.float32) - shift)
    return image[top:bottom, left:right].copy(), shifted


@dataclass
class TrackIdentity:
    """What a closed track says about who it is."""

    vectors: np.ndarray     # [K, D] unit embeddings of its chips (K >= 1)
    weights: np.ndarray     # [K] quality of each chip
    reliable: bool          # False: no chip good enough to vote; the track stays its own character

    @property
    def embedding(self) -> np.ndarray:
        """[D] quality-weighted unit mean of its chips."""
        return _unit((self.vectors * self.weights[:, None]).sum(axis=0))

    def serialize(self) -> dict:
        return {"vectors": self.vectors.tolist(), "weights": self.weights.tolist(), "reliable": self.reliable}


@dataclass
class _HeldFace:
    reliable: bool          # by geometry (size, pose); sharpness is checked on the chip at close
    quality: float
    t: float
    region: np.ndarray      # the face with context (see face_region)
    face: FaceDetection     # in region coordinates

    @property
    def rank(self) -> tuple[bool, float]:
        return self.reliable, self.quality


@dataclass
class TrackChips:
    """The best faces of each live track, chosen online; cut into chips and embedded when the track closes.

    A track keeps at most ``capacity`` faces at least ``min_spacing_seconds`` apart (short tracks get
    fewer: each dlib descriptor costs about 70 ms of CPU). Reliable faces (see :class:`ChipGate`) are
    preferred; only they are embedded. A track with none gets its single best face embedded (for the
    character's embedding) and is marked unreliable. :meth:`close` releases a track's face images.
    """

    embedder: FaceEmbedder
    capacity: int = 3
    min_spacing_seconds: float = 1.0   # spread faces over the track: a better face this close replaces, not adds
    gate: ChipGate = field(default_factory=ChipGate)
    faces: dict[str, list[_HeldFace]] = field(default_factory=dict)          # live track id -> held faces
    identities: dict[str, TrackIdentity] = field(default_factory=dict)       # closed track id -> identity

    def offer(self, track_id: str, image: np.ndarray, detection: FaceDetection) -> None:
        candidate_rank = (self.gate.geometry_ok(detection), face_quality(detection))
        held = self.faces.setdefault(track_id, [])
        near = [i for i, item in enumerate(held) if abs(item.t - detection.t) < self.min_spacing_seconds]
        if near:
            slot = near[0] if candidate_rank > held[near[0]].rank else None
        elif len(held) < self.capacity:
            held.append(None)
            slot = len(held) - 1
        else:
            worst = min(range(len(held)), key=lambda i: held[i].rank)
            slot = worst if candidate_rank > held[worst].rank else None
        if slot is not None:
            held[slot] = _HeldFace(*candidate_rank, detection.t, *face_region(image, detection))

    def close(self, track_ids: list[str]) -> None:
        """Embeds the faces of closed tracks (one descriptor call for all) and frees their images."""
        order: list[tuple[str, np.ndarray, float, bool]] = []   # (track id, chip, quality, reliable)
        for track_id in track_ids:
            held = self.faces.pop(track_id, [])
            chips = [(self.embedder.chip(h.region, h.face), h) for h in held]
            good = [(chip, h.quality, True) for chip, h in chips if h.reliable and self.gate.sharp_enough(chip)]
            if not good and chips:
                chip, best = max(chips, key=lambda item: item[1].quality)
                good = [(chip, best.quality, False)]
            order.extend((track_id, chip, quality, reliable) for chip, quality, reliable in good)
        if not order:
            return
        vectors = self.embedder.embed([chip for _, chip, _, _ in order])
        grouped: dict[str, list[int]] = {}
        for index, (track_id, _, _, _) in enumerate(order):
            grouped.setdefault(track_id, []).append(index)
        for track_id, indices in grouped.items():
            self.identities[track_id] = TrackIdentity(
                vectors=vectors[indices],
                weights=np.array([max(order[i][2], 1e-3) for i in indices], dtype=np.float32),
                reliable=order[indices[0]][3],
            )

    def discard(self, track_ids: list[str]) -> None:
        """Forgets tracks dropped as spurious without embedding them."""
        for track_id in track_ids:
            self.faces.pop(track_id, None)
            self.identities.pop(track_id, None)


# ------------------------------------------------------------------------------------- clustering


def co_occurring_pairs(tracks: list[FaceTrack]) -> set[tuple[int, int]]:
    """Index pairs (i < j) of tracks that have a detection at the same frame time: different people."""
    by_time: dict[float, list[int]] = {}
    for index, track in enumerate(tracks):
        for detection in track.detections:
            by_time.setdefault(round(detection.t, 4), []).append(index)
    pairs = set()
    for indices in by_time.values():
        for a in range(len(indices)):
            for b in range(a + 1, len(indices)):
                i, j = sorted((indices[a], indices[b]))
                if i != j:
                    pairs.add((i, j))
    return pairs


def track_distances(identities: list[TrackIdentity]) -> np.ndarray:
    """[N, N] median distance between the chips of two tracks; infinite where either is unreliable.

    The median of all chip pairs, not the distance of the means: one odd chip (a blink, motion blur)
    neither pulls two people together nor pushes one person apart.
    """
    n = len(identities)
    distance = np.full((n, n), np.inf)
    for i in range(n):
        distance[i, i] = 0.0
        if not identities[i].reliable:
            continue
        for j in range(i + 1, n):
            if identities[j].reliable:
                a, b = identities[i].vectors, identities[j].vectors          # [Ki, D], [Kj, D]
                pairwise = np.sqrt(np.clip(2.0 - 2.0 * (a @ b.T), 0.0, None))  # [Ki, Kj]
                distance[i, j] = distance[j, i] = float(np.median(pairwise))
    return distance


def cluster_embeddings(embeddings: np.ndarray, threshold: float, cannot_link: set[tuple[int, int]] = frozenset(),
                       weights: np.ndarray | None = None) -> list[list[int]]:
    """:func:`cluster_distances` on the L2 distances between unit embeddings [N, D]."""
    if len(embeddings) == 0:
        return []
    x = _unit(embeddings)
    distance = np.sqrt(np.clip(2.0 - 2.0 * (x @ x.T), 0.0, None)).astype(np.float64)  # [N, N]
    return cluster_distances(distance, threshold, cannot_link, weights)


def cluster_distances(distance: np.ndarray, threshold: float, cannot_link: set[tuple[int, int]] = frozenset(),
                      weights: np.ndarray | None = None) -> list[list[int]]:
    """Average-linkage agglomerative clustering of a [N, N] distance matrix with cannot-link pairs.

    Clusters are merged closest first while their average pairwise distance is below ``threshold`` and
    no member of one cannot be linked with a member of the other. An infinite distance never merges.
    """
    n = len(distance)
    if n == 0:
        return []
    size = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).copy()
    blocked = np.zeros((n, n), dtype=bool)
    for i, j in cannot_link:
        blocked[i, j] = blocked[j, i] = True
    members = {i: [i] for i in range(n)}
    active = np.ones(n, dtype=bool)
    linkage = np.asarray(distance, dtype=np.float64).copy()   # average distance between active clusters
    np.fill_diagonal(linkage, np.inf)
    while True:
        candidate = np.where(blocked | ~active[None, :] | ~active[:, None], np.inf, linkage)
        flat = int(np.argmin(candidate))
        i, j = divmod(flat, n)
        if not np.isfinite(candidate[i, j]) or candidate[i, j] >= threshold:
            break
        # Merge j into i: new average distances (inf stays inf), union of cannot-link constraints.
        with np.errstate(invalid="ignore"):
            linkage[i, :] = (size[i] * linkage[i, :] + size[j] * linkage[j, :]) / (size[i] + size[j])
        linkage[i, :] = np.where(np.isnan(linkage[i, :]), np.inf, linkage[i, :])
        linkage[:, i] = linkage[i, :]
        linkage[i, i] = np.inf
        size[i] += size[j]
        blocked[i, :] |= blocked[j, :]
        blocked[:, i] = blocked[i, :]
        active[j] = False
        members[i].extend(members.pop(j))
    return [sorted(m) for m in members.values()]


# ------------------------------------------------------------------------------------------- cast


@dataclass
class CastMember:
    name: str
    embedding: np.ndarray                 # [D] unit mean of its reference faces
    personality: np.ndarray | None = None


def read_cast_file(path: str | Path) -> list[dict]:
    """Parses a cast file (YAML or JSON): ``characters: [{name, images: [...], personality: [...]}]``."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"cast file {path} not found; fix the path or leave the cast out")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # json.JSONDecodeError, yaml.YAMLError
        raise ExtractorError(f"cast file {path}: cannot parse ({error}); see docs for the format") from None
    entries = data.get("characters") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ExtractorError(f"cast file {path}: expected a top-level 'characters' list of {{name, images}}")
    members = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry.get("images"):
            raise ExtractorError(f"cast file {path}: character #{k} needs a 'name' and a non-empty 'images' list")
        images = [(path.parent / image).resolve() for image in entry["images"]]
        personality = entry.get("personality")
        if personality is not None:
            try:
                personality = np.asarray(personality, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise ExtractorError(f"cast file {path}: personality of {entry['name']!r} must be a list of numbers") from None
        members.append({"name": entry["name"], "images": images, "personality": personality})
    return members


def load_cast(path: str | Path, detector, embedder: FaceEmbedder) -> list[CastMember]:
    """Embeds each cast member's reference images (the largest face in each image)."""
    cast = []
    for entry in read_cast_file(path):
        vectors = []
        for image_path in entry["images"]:
            bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise MediaError(f"cast image {image_path} of {entry['name']!r} is missing or not an image")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces = detector.detect([rgb], [0.0])[0]
            if not faces:
                raise MediaError(f"cast image {image_path} of {entry['name']!r}: no face found; use a clearer photo")
            largest = max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            vectors.append(embedder.embed([embedder.chip(rgb, largest)])[0])
        cast.append(CastMember(entry["name"], _unit(np.mean(vectors, axis=0)), entry["personality"]))
    return cast


# ------------------------------------------------------------------------------------- characters


def build_characters(tracks: list[FaceTrack], identities: dict[str, TrackIdentity], threshold: float,
                     cast: list[CastMember] | None = None) -> list[Character]:
    """Clusters tracks into characters ``C0, C1, ...`` ordered by screen presence (most first).

    Tracks are linked when the median distance between their chips is below ``threshold`` (average
    linkage, never two tracks that share a frame); an unreliable track is a character of its own. Tracks
    without an identity are left out. With a cast, each cast member names at most one character
    (Hungarian matching on distance), and only when closer than ``threshold``; characters made only of
    unreliable tracks are not named.
    """
    tracks = [t for t in tracks if t.id in identities]
    if not tracks:
        return []
    track_identities = [identities[t.id] for t in tracks]
    clusters = cluster_distances(track_distances(track_identities), threshold, co_occurring_pairs(tracks),
                                 weights=np.array([len(t.detections) for t in tracks], dtype=np.float64))
    clusters.sort(key=lambda c: (-sum(len(tracks[i].detections) for i in c), min(tracks[i].start for i in c)))
    characters, reliable = [], []
    for k, cluster in enumerate(clusters):
        weights = np.array([len(tracks[i].detections) for i in cluster], dtype=np.float32)
        vectors = np.stack([track_identities[i].embedding for i in cluster])
        embedding = _unit((vectors * weights[:, None]).sum(axis=0))
        ordered = sorted(cluster, key=lambda i: tracks[i].start)
        characters.append(Character(id=f"C{k}", track_ids=[tracks[i].id for i in ordered], name=None, embedding=embedding))
        reliable.append(any(track_identities[i].reliable for i in cluster))
    if cast:
        name_characters([c for c, ok in zip(characters, reliable, strict=True) if ok], cast, threshold)
    return characters


def name_characters(characters: list[Character], cast: list[CastMember], threshold: float) -> None:
    """Gives cast names (and personality vectors) to the closest characters, one character per name."""
    if not characters or not cast:
        return
    a = np.stack([c.embedding for c in characters])
    b = np.stack([m.embedding for m in cast])
    distance = np.sqrt(np.clip(2.0 - 2.0 * (a @ b.T), 0.0, None))  # [characters, cast]
    rows, cols = linear_sum_assignment(distance)
    for r, c in zip(rows, cols, strict=True):
        if distance[r, c] < threshold:
            characters[r].name = cast[c].name
            characters[r].personality = cast[c].personality
            log.info("%s is %s (distance %.2f)", characters[r].id, cast[c].name, distance[r, c])
