"""Dense face landmarks: MediaPipe's 468-point FaceMesh model, run with LiteRT, on MTCNN detections.

The model file ships in the mediapipe wheel (``mediapipe/modules/face_landmark/face_landmark.tflite``,
Apache-2.0; installed ``--no-deps`` only for that file); ``ai-edge-litert`` runs it. Input: a
[1, 192, 192, 3] float32 RGB crop in [0, 1]; outputs: 1404 = 468 x (x, y, z) in crop pixels (z in the
same scale as x, relative to the head centre) and a face-presence logit.

The crop is MediaPipe's own region of interest for a detection (``face_detection_front_detection_to_roi``):
the box centre, a square 1.5 times the longer box side, rotated so the eye line is level. It is cut with
one affine warp straight from the frame (no full-frame copy), and the points are mapped back through the
inverse warp to source pixels.

:func:`mesh_geometry` turns the points into the five ``MESH_GEOMETRY_NAMES`` measures (lip opening, mouth
width, eye openness, brow raise, presence), lengths divided by the face size: the 3D distance between the
outer eye corners, which neither the jaw nor a head turn changes much.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from extractors.contracts import FaceDetection, _Serializable
from extractors.errors import ModelNotFoundError
from extractors.model_store import resolve_model

log = logging.getLogger(__name__)

MESH_POINTS = 468
MESH_INPUT_SIZE = 192
ROI_SCALE = 1.5   # MediaPipe scales the detection box by 1.5 (square on the longer side) for the mesh

# FaceMesh indices. "Right"/"left" are the person's: the right eye is on the image's left in an unmirrored
# frame (MTCNN's first eye).
INNER_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))      # upper / lower inner lip, left to right
MOUTH_CORNERS = (61, 291)
RIGHT_EYE = {"outer": 33, "inner": 133, "upper": 159, "lower": 145}
LEFT_EYE = {"outer": 263, "inner": 362, "upper": 386, "lower": 374}
RIGHT_BROW = (70, 63, 105, 66, 107)                     # upper brow contour, outer to inner
LEFT_BROW = (300, 293, 334, 296, 336)

MESH_GEOMETRY_NAMES = (
    "mesh_lip_opening",     # mean inner-lip gap (3 pairs) / face size
    "mesh_mouth_width",     # mouth corner distance / face size
    "mesh_eye_openness",    # mean over both eyes of lid gap / eye width
    "mesh_brow_raise",      # mean over both brows of brow-contour-to-eye-centre distance / face size
    "mesh_face_presence",   # sigmoid of the model's face-presence logit (low: the crop holds no face)
)


@dataclass
class FaceMeshResult(_Serializable):
    points: np.ndarray     # [468, 3] float32: x, y in source pixels, z in the same pixel scale
    presence: float        # sigmoid of the face-presence logit, in [0, 1]


def roi_transform(detection: FaceDetection) -> np.ndarray:
    """[2, 3] float64 affine map from source pixels to the 192x192 model crop of ``detection``."""
    x1, y1, x2, y2 = detection.box
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2], dtype=np.float64)
    side = ROI_SCALE * max(x2 - x1, y2 - y1)
    eye_image_left, eye_image_right = np.asarray(detection.landmarks[:2], dtype=np.float64)
    dx, dy = eye_image_right - eye_image_left
    angle = np.degrees(np.arctan2(dy, dx))    # eye line angle; rotating the frame by it makes the eyes level
    scale = MESH_INPUT_SIZE / max(side, 1e-6)
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), scale)
    matrix[:, 2] += MESH_INPUT_SIZE / 2 - centre    # the box centre lands in the middle of the crop
    return matrix


def crop_face(image: np.ndarray, detection: FaceDetection) -> tuple[np.ndarray, np.ndarray]:
    """(crop [192, 192, 3] uint8 RGB, [2, 3] source->crop affine) for one face; outside pixels are black.

    warpAffine reads only the pixels the crop needs, so a 4K frame costs no more than a 480p one.
    """
    matrix = roi_transform(detection)
    crop = cv2.warpAffine(image, matrix, (MESH_INPUT_SIZE, MESH_INPUT_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crop, matrix


def points_to_source(points_crop: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """[N, 3] crop-pixel points -> [N, 3] source pixels (z scaled like x) through the inverse of ``matrix``."""
    inverse = cv2.invertAffineTransform(matrix)                 # [2, 3]
    xy = points_crop[:, :2] @ inverse[:, :2].T + inverse[:, 2]  # [N, 2]
    scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))  # crop pixel -> source pixels
    return np.concatenate([xy, points_crop[:, 2:3] * scale], axis=1).astype(np.float32)


class FaceMesh:
    """The 468-point FaceMesh model on faces found by the detector.

    ``model_path``: an explicit ``.tflite`` file (else the registry's ``face-mesh``); ``threads``: LiteRT's
    CPU threads (one face takes about 1.5-3 ms on one thread, so one is enough).
    """

    def __init__(self, model_path: str | Path | None = None, threads: int = 1):
        path = resolve_model("face-mesh", model_path)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ModelNotFoundError(
                f"the face mesh needs ai-edge-litert ({error}); pip install ai-edge-litert==2.3.0 (./setup.sh does this)"
            ) from None
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=max(1, int(threads)))
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ModelNotFoundError(f"{path}: not a loadable FaceMesh tflite model ({error})") from None
        self.model_path = Path(path)
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1 or tuple(inputs[0]["shape"]) != (1, MESH_INPUT_SIZE, MESH_INPUT_SIZE, 3):
            raise ModelNotFoundError(f"{path}: expected one [1, 192, 192, 3] input, got "
                                     f"{[tuple(i['shape']) for i in inputs]}; not the FaceMesh model")
        self._input = inputs[0]["index"]
        self._points_output = self._presence_output = None
        for output in self.interpreter.get_output_details():
            size = int(np.prod(output["shape"]))
            if size == MESH_POINTS * 3:
                self._points_output = output["index"]
            elif size == 1:
                self._presence_output = output["index"]
        if self._points_output is None or self._presence_output is None:
            raise ModelNotFoundError(f"{path}: no 1404-value landmark output and 1-value presence output; "
                                     "not the FaceMesh model (the with_attention variant is not supported)")

    def run_crop(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        """One [192, 192, 3] uint8 RGB crop -> ([468, 3] float32 crop-pixel points, presence logit)."""
        x = (crop.astype(np.float32) * (1.0 / 255.0))[None]    # [1, 192, 192, 3] in [0, 1]
        self.interpreter.set_tensor(self._input, x)
        self.interpreter.invoke()
        points = self.interpreter.get_tensor(self._points_output).reshape(MESH_POINTS, 3).copy()
        logit = float(self.interpreter.get_tensor(self._presence_output).reshape(-1)[0])
        return points, logit

    def __call__(self, image: np.ndarray, detections: Sequence[FaceDetection]) -> list[FaceMeshResult]:
        """The mesh of each detected face in an [H, W, 3] uint8 RGB frame, points in source pixels."""
        results = []
        for detection in detections:
            crop, matrix = crop_face(image, detection)
            points, logit = self.run_crop(crop)
            presence = float(1.0 / (1.0 + np.exp(-np.clip(logit, -60.0, 60.0))))
            results.append(FaceMeshResult(points_to_source(points, matrix), presence))
        return results


def _distance(points: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(points[a] - points[b]))


def mesh_geometry(mesh: FaceMeshResult) -> np.ndarray:
    """[len(MESH_GEOMETRY_NAMES)] float32 measures of one face (see the names); finite for any mesh."""
    points = np.asarray(mesh.points, dtype=np.float64)      # [468, 3]
    face_size = max(_distance(points, RIGHT_EYE["outer"], LEFT_EYE["outer"]), 1e-6)
    lip_gap = np.mean([_distance(points, upper, lower) for upper, lower in INNER_LIP_PAIRS])
    mouth_width = _distance(points, *MOUTH_CORNERS)
    openness, brow = [], []
    for eye, brow_points in ((RIGHT_EYE, RIGHT_BROW), (LEFT_EYE, LEFT_BROW)):
        width = max(_distance(points, eye["outer"], eye["inner"]), 1e-6)
        openness.append(_distance(points, eye["upper"], eye["lower"]) / width)
        eye_centre = (points[eye["outer"]] + points[eye["inner"]]) / 2
        brow.append(float(np.linalg.norm(points[list(brow_points)].mean(axis=0) - eye_centre)))
    return np.array([
        lip_gap / face_size,
        mouth_width / face_size,
        np.mean(openness),
        np.mean(brow) / face_size,
        mesh.presence,
    ], dtype=np.float32)
