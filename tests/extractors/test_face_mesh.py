"""FaceMesh (468 points) on MTCNN faces: crop geometry, points in source pixels, lip opening follows speech."""

from __future__ import annotations

import cv2
import librosa
import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from extractors.audio import load_audio
from extractors.contracts import FaceDetection
from extractors.errors import ModelNotFoundError
from extractors.face_mesh import (
    LEFT_EYE,
    MESH_GEOMETRY_NAMES,
    MESH_INPUT_SIZE,
    MOUTH_CORNERS,
    RIGHT_EYE,
    FaceMesh,
    FaceMeshResult,
    crop_face,
    mesh_geometry,
    points_to_source,
    roi_transform,
)
from extractors.faces import FaceDetector
from extractors.media import iter_frames
from extractors.model_store import locate_model
from extractors.visual_features import landmark_geometry


@pytest.fixture(scope="module")
def mesh():
    return FaceMesh()


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def _frame_at(path, t):
    return next(f for f in iter_frames(path, fps=None) if f.t >= t - 1e-6)


def test_model_is_registered_and_packaged():
    found = locate_model("face-mesh")
    assert found.source in ("package", "cache") and found.path.name == "face_landmark.tflite"
    assert found.version == "0.10.14"


def test_wrong_model_file_is_a_clear_error(tmp_path):
    bogus = tmp_path / "mesh.tflite"
    bogus.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelNotFoundError, match="FaceMesh"):
        FaceMesh(bogus)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        FaceMesh(tmp_path / "absent.tflite")


def test_crop_is_square_centred_and_levels_the_eyes():
    # Eyes on a line rising 30 degrees clockwise (image y down), box 100 px centred at (300, 200).
    angle = np.radians(30)
    centre = np.array([300.0, 180.0])
    half = 20 * np.array([np.cos(angle), np.sin(angle)])
    landmarks = np.array([centre - half, centre + half, [300, 200], [285, 225], [315, 225]], np.float32)
    face = FaceDetection(0.0, (250.0, 150.0, 350.0, 250.0), 0.99, landmarks)
    matrix = roi_transform(face)
    to_crop = np.c_[landmarks[:2], np.ones(2)] @ matrix.T
    assert to_crop[0, 1] == pytest.approx(to_crop[1, 1], abs=1e-6)              # level eyes
    assert to_crop[1, 0] - to_crop[0, 0] == pytest.approx(40 * MESH_INPUT_SIZE / 150)   # 1.5 x box side
    box_centre = np.array([300.0, 200.0, 1.0]) @ matrix.T
    np.testing.assert_allclose(box_centre, [MESH_INPUT_SIZE / 2] * 2, atol=1e-9)
    # Back to source pixels through the inverse, z scaled like x.
    crop_points = np.c_[to_crop, [10.0, -5.0]]
    back = points_to_source(crop_points, matrix)
    np.testing.assert_allclose(back[:, :2], landmarks[:2], atol=1e-4)
    np.testing.assert_allclose(back[:, 2], [10.0 * 150 / MESH_INPUT_SIZE, -5.0 * 150 / MESH_INPUT_SIZE], rtol=1e-5)


def _check_mesh_on_face(result: FaceMeshResult, detection: FaceDetection):
    assert result.points.shape == (468, 3) and result.points.dtype == np.float32
    assert result.presence > 0.9
    eye_l, eye_r, _, mouth_l, mouth_r = detection.landmarks
    iod = np.linalg.norm(eye_r - eye_l)
    right_eye = result.points[[RIGHT_EYE["outer"], RIGHT_EYE["inner"]], :2].mean(axis=0)  # image-left eye
    left_eye = result.points[[LEFT_EYE["outer"], LEFT_EYE["inner"]], :2].mean(axis=0)
    assert np.linalg.norm(right_eye - eye_l) < 0.2 * iod
    assert np.linalg.norm(left_eye - eye_r) < 0.2 * iod
    assert np.linalg.norm(result.points[MOUTH_CORNERS[0], :2] - mouth_l) < 0.25 * iod
    assert np.linalg.norm(result.points[MOUTH_CORNERS[1], :2] - mouth_r) < 0.25 * iod


def test_mesh_points_land_on_the_face_in_source_pixels(mesh, detector, media_dir):
    frame = _frame_at(media_dir / "visualvoice_interview.mp4", 3.0)
    found = detector.detect([frame.image], [frame.t])[0]
    assert len(found) == 2
    for detection, result in zip(found, mesh(frame.image, found), strict=True):
        _check_mesh_on_face(result, detection)
        geometry = mesh_geometry(result)
        assert geometry.shape == (len(MESH_GEOMETRY_NAMES),) and np.isfinite(geometry).all()
        lip, width, eye, brow, presence = geometry
        assert 0.0 <= lip < 0.5 and 0.4 < width < 1.0 and 0.05 < eye < 0.6 and 0.1 < brow < 0.5
        assert presence > 0.9


def test_tilted_head_gives_the_same_geometry(mesh, detector, media_dir):
    # The crop is rotated by the eye line, so a head tilted 40 degrees measures like the upright one.
    # Measured: lip 0.042 vs 0.032 upright, median point error 1.4 % of the eye distance; without the
    # rotation the lip opening reads 0.105 and the points are off by 12 %.
    frame = _frame_at(media_dir / "retalking_face1.mp4", 1.0)
    height, width = frame.image.shape[:2]
    rotation = cv2.getRotationMatrix2D((width / 2, height / 2), 40, 1.0)
    tilted = cv2.warpAffine(frame.image, rotation, (width, height), borderMode=cv2.BORDER_REFLECT)
    upright_face = detector.detect([frame.image], [0.0])[0][0]
    tilted_face = detector.detect([tilted], [0.0])[0][0]
    upright, turned = mesh(frame.image, [upright_face])[0], mesh(tilted, [tilted_face])[0]
    _check_mesh_on_face(turned, tilted_face)
    difference = np.abs(mesh_geometry(turned) - mesh_geometry(upright))
    assert np.all(difference[:4] < [0.02, 0.03, 0.07, 0.03]), difference
    # The tilted mesh is the upright one rotated: compare the points through the same rotation.
    rotated = np.c_[upright.points[:, :2], np.ones(468)] @ rotation.T
    iod = np.linalg.norm(upright_face.landmarks[1] - upright_face.landmarks[0])
    assert np.median(np.linalg.norm(rotated - turned.points[:, :2], axis=1)) < 0.05 * iod


def test_crop_of_a_huge_frame_reads_only_the_face(mesh):
    # An 8K frame: the crop is one warp of the face region, no full-frame conversion.
    frame = np.zeros((4320, 7680, 3), np.uint8)
    face = FaceDetection(0.0, (7000.0, 4000.0, 7200.0, 4250.0), 0.99,
                         np.array([[7060, 4080], [7140, 4080], [7100, 4130], [7070, 4180], [7130, 4180]], np.float32))
    crop, _ = crop_face(frame, face)
    assert crop.shape == (MESH_INPUT_SIZE, MESH_INPUT_SIZE, 3) and crop.dtype == np.uint8
    result = mesh(frame, [face])[0]
    assert result.presence < 0.5   # black: no face in the crop


SPEECH_LAG = 0.08       # the sound follows the mouth shape by a few frames
SYLLABLE_WINDOW = 0.2   # both signals smoothed over about a syllable: RMS peaks on vowels, lips move per phone


def _speech_correlations(path, detector, mesh) -> dict[str, float]:
    """Correlation with the audio RMS envelope, over every frame of a one-face clip, of the mesh lip
    opening and of the two five-point mouth-opening proxies."""
    frames = list(iter_frames(path, fps=None))
    times, lips, eye_mouth, nose_mouth = [], [], [], []
    for start in range(0, len(frames), 8):
        chunk = frames[start:start + 8]
        for frame, found in zip(chunk, detector.detect([f.image for f in chunk], [f.t for f in chunk]), strict=True):
            if found:
                times.append(frame.t)
                lips.append(mesh_geometry(mesh(frame.image, found[:1])[0])[0])
                geometry = landmark_geometry(found[0], frame.image.shape[0])
                eye_mouth.append(geometry[1])
                nose_mouth.append(geometry[2])
    assert len(times) >= 0.9 * len(frames)
    sample_rate, hop = 16000, 160
    audio = load_audio(path, sample_rate=sample_rate)
    rms = uniform_filter1d(librosa.feature.rms(y=audio, frame_length=4 * hop, hop_length=hop, center=False)[0],
                           round(SYLLABLE_WINDOW * sample_rate / hop))
    rms_times = (np.arange(len(rms)) * hop + 2 * hop) / sample_rate
    envelope = np.interp(np.asarray(times) + SPEECH_LAG, rms_times, rms)
    window = max(1, round(SYLLABLE_WINDOW / np.median(np.diff(times))))
    return {name: float(np.corrcoef(uniform_filter1d(np.asarray(values, np.float64), window), envelope)[0, 1])
            for name, values in (("lip", lips), ("eye_mouth", eye_mouth), ("nose_mouth", nose_mouth))}


@pytest.mark.slow
def test_lip_opening_follows_speech(mesh, detector, media_dir):
    # Measured (smoothed 0.2 s, lag 80 ms): lip 0.56 / 0.32 / 0.73; nose-mouth 0.34 / 0.22 / -0.84;
    # eye-mouth 0.53 / 0.72 / -0.92: the five-point proxies follow head motion, with either sign.
    clips = ("retalking_face1.mp4", "retalking_face2.mp4", "deep_lip_reading_demo.mp4")
    found = {name: _speech_correlations(media_dir / name, detector, mesh) for name in clips}
    for name, corr in found.items():
        assert corr["lip"] > 0.25, (name, found)
        assert corr["lip"] > corr["nose_mouth"] + 0.05, (name, found)
    # Only the mesh measure follows speech on every clip.
    worst = {measure: min(corr[measure] for corr in found.values()) for measure in ("lip", "eye_mouth", "nose_mouth")}
    assert worst["lip"] > max(worst["eye_mouth"], worst["nose_mouth"]) + 0.2, found
