"""Characters from face tracks: identity embeddings, cannot-link clustering, cast files."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from extractors.contracts import FaceDetection
from extractors.errors import ExtractorError, MediaError, ModelNotFoundError
from extractors.identity import (
    DlibFaceEmbedder,
    cluster_embeddings,
    co_occurring_pairs,
    load_cast,
    load_face_embedder,
    name_characters,
    read_cast_file,
)
from extractors.media import iter_frames


@pytest.fixture(scope="module")
def interview(extractor, media_dir):
    return extractor(media_dir / "visualvoice_interview.mp4")


def test_cannot_link_keeps_look_alikes_apart():
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.98, 0.2, 0.0])        # 0.2 from a
    c = np.array([0.0, 1.0, 0.0])
    embeddings = np.stack([a, b, c, a])
    assert cluster_embeddings(embeddings, threshold=0.6) == [[0, 1, 3], [2]]
    # Tracks 0 and 1 share a frame: never one person, even though they look alike.
    assert cluster_embeddings(embeddings, threshold=0.6, cannot_link={(0, 1)}) in ([[0, 3], [1], [2]], [[0], [1, 3], [2]])
    assert cluster_embeddings(np.zeros((0, 3)), threshold=0.6) == []


@pytest.mark.slow
def test_interview_gives_exactly_two_characters(interview):
    assert len(interview.characters) == 2
    tracks_of = {c.id: c.track_ids for c in interview.characters}
    assert all(1 <= len(ids) <= 2 for ids in tracks_of.values())
    centre_x = {}
    for character in interview.characters:
        times = {d.t for tid in character.track_ids for d in interview.track(tid).detections}
        assert len(times) >= 0.95 * interview.frames_analysed       # found in at least 95% of sampled frames
        boxes = [d.box for tid in character.track_ids for d in interview.track(tid).detections]
        centre_x[character.id] = float(np.median([(b[0] + b[2]) / 2 for b in boxes]))
        assert character.embedding.shape == (128,)
        assert np.linalg.norm(character.embedding) == pytest.approx(1.0, abs=1e-5)
    assert sorted(centre_x.values())[0] < 640 < sorted(centre_x.values())[1]   # one per half of the split screen
    a, b = (c.embedding for c in interview.characters)
    assert np.linalg.norm(a - b) > 0.6


@pytest.mark.slow
def test_co_occurring_tracks_are_cannot_link(interview):
    assert co_occurring_pairs(interview.tracks) == {(0, 1)}


@pytest.mark.slow
def test_result_serializes_to_json(interview):
    data = json.loads(json.dumps(interview.serialize()))
    assert [c["id"] for c in data["characters"]] == ["C0", "C1"]
    assert len(data["characters"][0]["embedding"]) == 128
    assert len(data["tracks"][0]["detections"][0]["landmarks"]) == 5
    assert data["video"]["width"] == 1280 and data["frames_analysed"] == 71


def _save_face(image, box, path, margin=0.6):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    crop = image[int(max(0, y1 - margin * h)) : int(y2 + margin * h), int(max(0, x1 - margin * w)) : int(x2 + margin * w)]
    cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))


@pytest.mark.slow
def test_cast_file_names_the_characters(interview, extractor, media_dir, tmp_path):
    frame = next(f for f in iter_frames(media_dir / "visualvoice_interview.mp4", fps=None) if f.t >= 9.0)
    faces = sorted(extractor.detector.detect([frame.image], [frame.t])[0], key=lambda d: d.box[0])
    _save_face(frame.image, faces[0].box, tmp_path / "host.png")
    _save_face(frame.image, faces[1].box, tmp_path / "guest.jpg")
    (tmp_path / "cast.json").write_text(json.dumps({"characters": [
        {"name": "Guest", "images": ["guest.jpg"], "personality": [0.1, 0.2, 0.3, 0.4, 0.5]},
        {"name": "Host", "images": ["host.png"]},
    ]}))
    cast = load_cast(tmp_path / "cast.json", extractor.detector, extractor.embedder)
    characters = [replace(c) for c in interview.characters]
    name_characters(characters, cast, extractor.threshold)
    left_first = sorted(characters, key=lambda c: interview.track(c.track_ids[0]).detections[0].box[0])
    assert [c.name for c in left_first] == ["Host", "Guest"]
    assert left_first[0].personality is None
    np.testing.assert_allclose(left_first[1].personality, [0.1, 0.2, 0.3, 0.4, 0.5])
    # A cast member nobody resembles names no one.
    stranger = [replace(cast[0], name="Stranger", embedding=-cast[0].embedding)]
    fresh = [replace(c, name=None) for c in interview.characters]
    name_characters(fresh, stranger, extractor.threshold)
    assert all(c.name is None for c in fresh)


def test_cast_file_errors(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        read_cast_file(tmp_path / "absent.yaml")
    bad = tmp_path / "cast.yaml"
    bad.write_text("characters: nope\n")
    with pytest.raises(ExtractorError, match="'characters' list"):
        read_cast_file(bad)
    bad.write_text("characters:\n  - name: Ann\n")
    with pytest.raises(ExtractorError, match="images"):
        read_cast_file(bad)
    bad.write_text("characters:\n  - name: Ann\n    images: [ann.png]\n    personality: [a, b]\n")
    with pytest.raises(ExtractorError, match="personality"):
        read_cast_file(bad)
    bad.write_text("characters:\n  - name: Ann\n    images: [ann.png]\n    personality: [1, 2.5]\n")
    entry = read_cast_file(bad)[0]
    assert entry["images"] == [(tmp_path / "ann.png").resolve()]
    assert entry["personality"].tolist() == [1.0, 2.5]
    with pytest.raises(MediaError, match="ann.png"):
        load_cast(bad, detector=None, embedder=None)


def test_embedder_falls_back_to_dlib_without_facenet_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert isinstance(load_face_embedder("auto"), DlibFaceEmbedder)
    with pytest.raises(ModelNotFoundError, match="20180402-114759-vggface2.pt"):
        load_face_embedder("facenet")


def test_facenet_is_preferred_when_its_weights_are_cached(tmp_path, monkeypatch):
    """Loader path only: a freshly initialised network saved where torch hub keeps VGGFace2 weights.

    Real VGGFace2 weights cannot be downloaded here; this checks that "auto" picks facenet from the torch
    hub cache, that the checkpoint loads with weights_only, and the chip and embedding shapes.
    """
    from extractors.faces import import_facenet
    from extractors.identity import FacenetFaceEmbedder

    import_facenet()
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    torch.manual_seed(0)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(InceptionResnetV1(pretrained=None, classify=False, num_classes=8631).state_dict(),
               checkpoints / "20180402-114759-vggface2.pt")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    embedder = load_face_embedder("auto")
    assert isinstance(embedder, FacenetFaceEmbedder)
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    face = FaceDetection(t=0.0, box=(100.0, 50.0, 220.0, 200.0), score=0.99, landmarks=np.zeros((5, 2), np.float32))
    chip = embedder.chip(image, face)
    assert chip.shape == (160, 160, 3)
    vectors = embedder.embed([chip, chip[::-1].copy()])
    assert vectors.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert "torchvision" not in sys.modules or sys.modules["torchvision"].__spec__ is not None


def test_track_chips_keep_the_best_spread_faces_and_crop_exactly(extractor, media_dir):
    from extractors.identity import TrackChips, face_region

    frame = next(iter_frames(media_dir / "visualvoice_interview.mp4", fps=1.0))
    face = extractor.detector.detect([frame.image], [frame.t])[0][0]
    region, shifted = face_region(frame.image, face)
    # The chip from the kept region equals the chip from the whole frame (the region holds all its context).
    np.testing.assert_array_equal(extractor.embedder.chip(region, shifted), extractor.embedder.chip(frame.image, face))

    chips = TrackChips(extractor.embedder, capacity=2, min_spacing_seconds=0.5)

    def at(t, score):
        return FaceDetection(t=t, box=face.box, score=score, landmarks=face.landmarks)

    for t, score in ((0.0, 0.90), (0.25, 0.95), (1.0, 0.91), (2.0, 0.99), (3.0, 0.50)):
        chips.offer("T0", frame.image, at(t, score))
    # 0.25 replaced 0.0 (closer than 0.5 s, better); 2.0 replaced the worst (1.0); 3.0 was too poor.
    assert sorted(t for _, t, _, _ in chips.faces["T0"]) == [0.25, 2.0]
    vectors = chips.embed(["T0", "T9"])
    assert list(vectors) == ["T0"] and vectors["T0"].shape == (128,)
