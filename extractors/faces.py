"""Face detection with 5 landmarks: MTCNN with the weights facenet-pytorch ships.

Frames are downscaled before detection (the cost of MTCNN grows with the pixel count) and the boxes and
landmarks are mapped back to source pixels. The cascade itself is :mod:`extractors.mtcnn` (OpenCV
resampling and NMS around facenet-pytorch's nets). facenet-pytorch's package imports torchvision; where
torchvision cannot be imported (a CPU-only torch with a CUDA torchvision wheel), its modules are imported
behind a temporary stand-in that is removed again (only the nets' classes are used).
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from extractors.contracts import FaceDetection
from extractors.errors import ModelNotFoundError
from extractors.model_store import resolve_model
from extractors.mtcnn import CascadeOutput, MtcnnCascade

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- facenet-pytorch without torchvision

_TORCHVISION_OK: bool | None = None


def torchvision_available() -> bool:
    """True when torchvision imports and its compiled ops work; a failed import leaves no module behind."""
    global _TORCHVISION_OK
    if _TORCHVISION_OK is None:
        before = set(sys.modules)
        try:
            from torchvision.ops import batched_nms as _tv_batched_nms  # noqa: F401

            _TORCHVISION_OK = True
        except Exception as error:  # a CUDA wheel on a CPU torch fails in many ways
            log.info("torchvision unusable (%s); importing facenet-pytorch behind a stand-in", str(error).splitlines()[0][:120])
            for name in set(sys.modules) - before:
                if name == "torchvision" or name.startswith("torchvision."):
                    del sys.modules[name]
            _TORCHVISION_OK = False
    return _TORCHVISION_OK


def _to_tensor(picture) -> torch.Tensor:
    """torchvision.transforms.functional.to_tensor for HxWxC arrays (used by facenet's extract_face)."""
    array = np.asarray(picture)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    return tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor.float()


def import_facenet() -> types.ModuleType:
    """facenet_pytorch.models.utils.detect_face (and so the whole facenet_pytorch package), with or without torchvision."""
    name = "facenet_pytorch.models.utils.detect_face"
    if name in sys.modules:
        module = sys.modules[name]
    elif torchvision_available():
        module = importlib.import_module(name)
    else:
        stand_ins = {
            "torchvision": types.ModuleType("torchvision"),
            "torchvision.transforms": types.ModuleType("torchvision.transforms"),
            "torchvision.transforms.functional": types.ModuleType("torchvision.transforms.functional"),
            "torchvision.ops": types.ModuleType("torchvision.ops"),
            "torchvision.ops.boxes": types.ModuleType("torchvision.ops.boxes"),
        }
        stand_ins["torchvision.transforms.functional"].to_tensor = _to_tensor
        stand_ins["torchvision.transforms"].functional = stand_ins["torchvision.transforms.functional"]
        stand_ins["torchvision.ops.boxes"].batched_nms = _unused_batched_nms
        stand_ins["torchvision.ops"].boxes = stand_ins["torchvision.ops.boxes"]
        sys.modules.update(stand_ins)
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ModelNotFoundError(
                f"facenet-pytorch is not importable ({error}); pip install --no-deps facenet-pytorch==2.6.0"
            ) from None
        finally:
            # A stand-in left in sys.modules breaks other libraries (transformers checks torchvision.__spec__).
            for key in stand_ins:
                if sys.modules.get(key) is stand_ins[key]:
                    del sys.modules[key]
    return module


def _unused_batched_nms(*args, **kwargs):
    raise NotImplementedError("facenet-pytorch's detect_face is not used here: see extractors.mtcnn")


# --------------------------------------------------------------------------------------- detector


@dataclass
class FaceDetectorConfig:
    max_side: int = 640               # frames are downscaled so their longer side is at most this (0: never)
    min_face_size: int = 20           # smallest face searched, in pixels of the downscaled frame
    thresholds: tuple[float, float, float] = (0.7, 0.8, 0.8)  # P/R/O-Net acceptance (fewer P-Net candidates than facenet's 0.6, 0.7: faster)
    factor: float = 0.709             # image pyramid scale step
    min_score: float = 0.9            # final detections below this are dropped
    batch_size: int = 8               # frames per MTCNN call (same-size frames only)
    crop_batch: int = 128             # face candidates per R-Net / O-Net call (bounds a crowded frame's memory)
    device: str | None = None         # None: CUDA when available, else CPU


class FaceDetector:
    """MTCNN on batches of RGB frames; returns :class:`FaceDetection` lists in source pixels."""

    def __init__(self, config: FaceDetectorConfig | None = None, weights: str | Path | None = None):
        self.config = config or FaceDetectorConfig()
        self.device = torch.device(self.config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        folder = resolve_model("mtcnn", weights)
        import_facenet()   # facenet_pytorch's package import needs torchvision or the temporary stand-in
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        self.nets = []
        for net_class, file_name in ((PNet, "pnet.pt"), (RNet, "rnet.pt"), (ONet, "onet.pt")):
            net = net_class(pretrained=False)
            path = Path(folder) / file_name
            if not path.is_file():
                raise ModelNotFoundError(f"MTCNN weights {path} missing; pip install --no-deps facenet-pytorch==2.6.0")
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            # channels-last: the layout the cascade's NHWC arrays already have; 1.5-4x faster convolutions on CPU.
            self.nets.append(net.to(self.device, memory_format=torch.channels_last).eval())
        self.cascade = MtcnnCascade(*self.nets, thresholds=self.config.thresholds, factor=self.config.factor,
                                    min_face_size=self.config.min_face_size, device=self.device,
                                    crop_batch=self.config.crop_batch)

    def _scale(self, height: int, width: int) -> float:
        longest = max(height, width)
        if not self.config.max_side or longest <= self.config.max_side:
            return 1.0
        return self.config.max_side / longest

    def _downscaled(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
        height, width = images[0].shape[:2]
        scale = self._scale(height, width)
        if scale == 1.0:
            return np.stack(images), scale
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return np.stack([cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in images]), scale

    def detect(self, images: Sequence[np.ndarray], times: Sequence[float]) -> list[list[FaceDetection]]:
        """Faces in each image ([H, W, 3] uint8 RGB, all the same size), sorted by score."""
        if len(images) != len(times):
            raise ValueError("one time per image")
        results: list[list[FaceDetection]] = []
        for start in range(0, len(images), self.config.batch_size):
            chunk = images[start : start + self.config.batch_size]
            small, scale = self._downscaled(chunk)
            height, width = chunk[0].shape[:2]
            for offset, found in enumerate(self.cascade.detect(small)):
                results.append(self._to_detections(found, 1.0 / scale, times[start + offset], width, height))
        return results

    def verify(self, image: np.ndarray, t: float, prior: Sequence[FaceDetection]) -> list[FaceDetection]:
        """The faces of ``prior`` (found a moment earlier) re-measured in ``image`` by O-Net alone.

        A face still about where it was comes back with its new box, landmarks and score; one that left
        or turned away fails the O-Net and min-score tests. New faces are not searched for.
        """
        if not prior:
            return []
        small, scale = self._downscaled([image])
        boxes = np.array([d.box for d in prior], dtype=np.float32) * scale
        found = self.cascade.verify(small, [boxes])[0]
        return self._to_detections(found, 1.0 / scale, t, image.shape[1], image.shape[0])

    def follow(self, image: np.ndarray, t: float, prior: Sequence[FaceDetection]) -> list[FaceDetection]:
        """:meth:`verify`, falling back to a full search of the frame when any face of ``prior`` is lost.

        A lost face has moved too far for its old box (a crowd walking past, a pan), turned, or left: the
        search then finds wherever it went. Only faces appearing where none was are left for the next search.
        """
        kept = self.verify(image, t, prior)
        if len(kept) < len(prior):
            return self.detect([image], [t])[0]
        return kept

    def _to_detections(self, faces: CascadeOutput, inverse_scale, t, width, height) -> list[FaceDetection]:
        found = []
        for box, landmarks in zip(faces.boxes.astype(np.float64), faces.points.astype(np.float64), strict=True):
            score = float(box[4])
            if score < self.config.min_score:
                continue
            x1, y1, x2, y2 = (box[:4] * inverse_scale).tolist()
            x1, y1 = max(0.0, x1), max(0.0, y1)
            x2, y2 = min(float(width), x2), min(float(height), y2)
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            found.append(FaceDetection(t=float(t), box=(x1, y1, x2, y2), score=score,
                                       landmarks=(landmarks * inverse_scale).astype(np.float32)))
        found.sort(key=lambda d: -d.score)
        return found
