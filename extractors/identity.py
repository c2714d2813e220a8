"""Characters: face tracks clustered into people across the whole video, optionally named by a cast file.

Identity embeddings come from the best model available offline: facenet-pytorch's InceptionResnetV1
(VGGFace2) when its weights are in the torch hub cache, otherwise dlib's ResNet face descriptor that
face-recognition-models ships, aligned with dlib's 5-point predictor. Each track is embedded from a few
of its best faces (``chips_per_track``), not every frame. Tracks are clustered by average-linkage
agglomeration with a distance threshold and the cannot-link constraint that two tracks seen in the same
frame are two people.
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
    # dlib's documented same-person threshold is 0.6 on raw descriptors (norm about 1); on unit vectors
    # the interview clip gives same-person <= 0.55 and different >= 0.86.
    distance_threshold = 0.6

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
    distance_threshold = 1.0   # facenet's usual threshold on unit embeddings (1.1 in its examples; stricter here)

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
            # ModelNotFoundError lets load_face_embedder("auto") fall back to the dlib descriptor
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


def load_face_embedder(prefer: str = "auto") -> FaceEmbedder:
    """``"auto"``: facenet when its VGGFace2 weights are cached, else dlib; or force ``"facenet"`` / ``"dlib"``."""
    if prefer not in ("auto", "facenet", "dlib"):
        raise ValueError(f"unknown face embedder {prefer!r}; use auto, facenet or dlib")
    if prefer in ("auto", "facenet"):
        try:
            return FacenetFaceEmbedder()
        except ModelNotFoundError:
            if prefer == "facenet":
                raise
            log.info("facenet VGGFace2 weights not cached; using dlib's face descriptor")
    return DlibFaceEmbedder()


# -------------------------------------------------------------------------------- chips per track


def face_quality(detection: FaceDetection) -> float:
    """Prefers confident, large, frontal faces: score x size (capped at 120 px) x eye-level symmetry."""
    x1, y1, x2, y2 = detection.box
    size = min(1.0, math.sqrt(max(x2 - x1, 0) * max(y2 - y1, 0)) / 120.0)
    eye_l, eye_r, nose = detection.landmarks[0], detection.landmarks[1], detection.landmarks[2]
    eye_gap = max(float(np.linalg.norm(eye_r - eye_l)), 1e-6)
    # Nose halfway between the eyes (horizontally) for a frontal face.
    frontal = max(0.0, 1.0 - abs(float(nose[0] - (eye_l[0] + eye_r[0]) / 2)) / eye_gap)
    return detection.score * size * (0.5 + 0.5 * frontal)


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
class TrackChips:
    """The best ``capacity`` faces of each track, chosen online while frames stream by, embedded at the end."""

    embedder: FaceEmbedder
    capacity: int = 2
    min_spacing_seconds: float = 0.5   # spread faces over the track: a better face this close replaces, not adds
    # track id -> [(quality, t, face region, detection in region coordinates)]
    faces: dict[str, list[tuple[float, float, np.ndarray, FaceDetection]]] = field(default_factory=dict)

    def offer(self, track_id: str, image: np.ndarray, detection: FaceDetection) -> None:
        quality = face_quality(detection)
        held = self.faces.setdefault(track_id, [])
        near = [i for i, item in enumerate(held) if abs(item[1] - detection.t) < self.min_spacing_seconds]
        if near:
            slot = near[0] if quality > held[near[0]][0] else None
        elif len(held) < self.capacity:
            held.append(None)
            slot = len(held) - 1
        else:
            worst = min(range(len(held)), key=lambda i: held[i][0])
            slot = worst if quality > held[worst][0] else None
        if slot is not None:
            held[slot] = (quality, detection.t, *face_region(image, detection))

    def embed(self, track_ids: list[str]) -> dict[str, np.ndarray]:
        """{track id: [D] unit mean embedding} for the tracks that have faces."""
        order = [(tid, self.embedder.chip(region, face)) for tid in track_ids for _, _, region, face in self.faces.get(tid, [])]
        if not order:
            return {}
        vectors = self.embedder.embed([chip for _, chip in order])
        grouped: dict[str, list[np.ndarray]] = {}
        for (tid, _), vector in zip(order, vectors, strict=True):
            grouped.setdefault(tid, []).append(vector)
        return {tid: _unit(np.mean(vs, axis=0)) for tid, vs in grouped.items()}


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


def cluster_embeddings(embeddings: np.ndarray, threshold: float, cannot_link: set[tuple[int, int]] = frozenset(),
                       weights: np.ndarray | None = None) -> list[list[int]]:
    """Average-linkage agglomerative clustering with cannot-link pairs; returns clusters of indices.

    Clusters are merged closest first while their average pairwise distance is below ``threshold`` and
    no member of one cannot be linked with a member of the other.
    """
    n = len(embeddings)
    if n == 0:
        return []
    x = _unit(embeddings)
    distance = np.sqrt(np.clip(2.0 - 2.0 * (x @ x.T), 0.0, None)).astype(np.float64)  # [N, N]
    size = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    blocked = np.zeros((n, n), dtype=bool)
    for i, j in cannot_link:
        blocked[i, j] = blocked[j, i] = True
    members = {i: [i] for i in range(n)}
    active = np.ones(n, dtype=bool)
    linkage = distance.copy()   # average distance between active clusters (weighted by their sizes)
    np.fill_diagonal(linkage, np.inf)
    while True:
        candidate = np.where(blocked | ~active[None, :] | ~active[:, None], np.inf, linkage)
        flat = int(np.argmin(candidate))
        i, j = divmod(flat, n)
        if not np.isfinite(candidate[i, j]) or candidate[i, j] >= threshold:
            break
        # Merge j into i: new average distances, union of cannot-link constraints.
        linkage[i, :] = (size[i] * linkage[i, :] + size[j] * linkage[j, :]) / (size[i] + size[j])
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


def build_characters(tracks: list[FaceTrack], track_embeddings: dict[str, np.ndarray], threshold: float,
                     cast: list[CastMember] | None = None) -> list[Character]:
    """Clusters embedded tracks into characters ``C0, C1, ...`` ordered by screen presence (most first).

    Tracks without an embedding are left out. With a cast, each cast member names at most one
    character (Hungarian matching on distance), and only when closer than ``threshold``.
    """
    tracks = [t for t in tracks if t.id in track_embeddings]
    if not tracks:
        return []
    vectors = np.stack([track_embeddings[t.id] for t in tracks])
    clusters = cluster_embeddings(vectors, threshold, co_occurring_pairs(tracks),
                                  weights=np.array([len(t.detections) for t in tracks], dtype=np.float64))
    clusters.sort(key=lambda c: (-sum(len(tracks[i].detections) for i in c), min(tracks[i].start for i in c)))
    characters = []
    for k, cluster in enumerate(clusters):
        weights = np.array([len(tracks[i].detections) for i in cluster], dtype=np.float32)
        embedding = _unit((vectors[cluster] * weights[:, None]).sum(axis=0))
        ordered = sorted(cluster, key=lambda i: tracks[i].start)
        characters.append(Character(id=f"C{k}", track_ids=[tracks[i].id for i in ordered], name=None, embedding=embedding))
    if cast:
        name_characters(characters, cast, threshold)
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
