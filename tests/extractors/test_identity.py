"""Characters from face tracks: identity embeddings, cannot-link clustering, cast files."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from extractors.contracts import FaceDetection, FaceTrack
from extractors.errors import ExtractorError, MediaError, ModelNotFoundError
from extractors.identity import (
    ChipGate,
    DlibFaceEmbedder,
    TrackChips,
    TrackIdentity,
    build_characters,
    cluster_embeddings,
    co_occurring_pairs,
    face_region,
    load_cast,
    load_face_embedder,
    name_characters,
    read_cast_file,
    track_distances,
)
from extractors.media import iter_frames
from extractors.tracking import FaceTracker
from tests.extractors import edited_media as em


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


def _random_facenet_checkpoint(folder):
    """A freshly initialised InceptionResnetV1 saved where torch hub keeps the VGGFace2 weights."""
    from extractors.faces import import_facenet

    import_facenet()
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    torch.manual_seed(0)
    checkpoints = folder / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    path = checkpoints / "20180402-114759-vggface2.pt"
    torch.save(InceptionResnetV1(pretrained=None, classify=False, num_classes=8631).state_dict(), path)
    return path


def test_facenet_is_used_only_when_asked_for(tmp_path, monkeypatch):
    """A facenet file in the torch cache must not switch "auto" to facenet (its threshold is uncalibrated).

    Real VGGFace2 weights cannot be downloaded here; a random network checks the loader path only: that
    "facenet" loads from the cache or an explicit path with weights_only, on the given device, and the
    chip and embedding shapes.
    """
    from extractors.identity import FacenetFaceEmbedder

    weights = _random_facenet_checkpoint(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert isinstance(load_face_embedder("auto"), DlibFaceEmbedder)
    assert isinstance(load_face_embedder("dlib"), DlibFaceEmbedder)
    assert isinstance(load_face_embedder("facenet"), FacenetFaceEmbedder)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    embedder = load_face_embedder("facenet", facenet_weights=weights, device="cpu")
    assert isinstance(embedder, FacenetFaceEmbedder) and embedder.device == torch.device("cpu")
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    face = FaceDetection(t=0.0, box=(100.0, 50.0, 220.0, 200.0), score=0.99, landmarks=np.zeros((5, 2), np.float32))
    chip = embedder.chip(image, face)
    assert chip.shape == (160, 160, 3)
    vectors = embedder.embed([chip, chip[::-1].copy()])
    assert vectors.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert "torchvision" not in sys.modules or sys.modules["torchvision"].__spec__ is not None
    with pytest.raises(ValueError, match="unknown face embedder"):
        load_face_embedder("arcface")


@pytest.fixture(scope="module")
def interview_face(extractor, media_dir):
    frame = next(iter_frames(media_dir / "visualvoice_interview.mp4", fps=1.0))
    return frame, extractor.detector.detect([frame.image], [frame.t])[0][0]


def test_track_chips_keep_the_best_spread_faces_and_crop_exactly(extractor, interview_face):
    frame, face = interview_face
    region, shifted = face_region(frame.image, face)
    # The chip from the kept region equals the chip from the whole frame (the region holds all its context).
    np.testing.assert_array_equal(extractor.embedder.chip(region, shifted), extractor.embedder.chip(frame.image, face))

    chips = TrackChips(extractor.embedder, capacity=2, min_spacing_seconds=0.5)

    def at(t, score):
        return FaceDetection(t=t, box=face.box, score=score, landmarks=face.landmarks)

    for t, score in ((0.0, 0.90), (0.25, 0.95), (1.0, 0.91), (2.0, 0.99), (3.0, 0.50)):
        chips.offer("T0", frame.image, at(t, score))
    # 0.25 replaced 0.0 (closer than 0.5 s, better); 2.0 replaced the worst (1.0); 3.0 was too poor.
    assert sorted(h.t for h in chips.faces["T0"]) == [0.25, 2.0]
    chips.close(["T0", "T9"])
    assert list(chips.identities) == ["T0"] and chips.faces == {}
    identity = chips.identities["T0"]
    assert identity.reliable and identity.vectors.shape == (2, 128) and identity.embedding.shape == (128,)


def test_a_face_too_small_to_trust_gets_no_vote(extractor, interview_face):
    """A track whose faces are all small is embedded once (for its character) and marked unreliable."""
    frame, face = interview_face
    small = cv2.resize(frame.image, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)   # a 50 px face
    tiny = FaceDetection(t=0.0, box=tuple(v / 4 for v in face.box), score=face.score, landmarks=face.landmarks / 4)
    assert not ChipGate().geometry_ok(tiny) and ChipGate().geometry_ok(face)
    chips = TrackChips(extractor.embedder)
    for k in range(4):
        chips.offer("T0", small, replace(tiny, t=k * 1.0))
    chips.close(["T0"])
    assert not chips.identities["T0"].reliable and chips.identities["T0"].vectors.shape == (1, 128)


def _track(track_id, times):
    face = np.zeros((5, 2), np.float32)
    return FaceTrack(id=track_id, shot=0, detections=[FaceDetection(t=t, box=(0, 0, 80, 80), score=0.99, landmarks=face)
                                                      for t in times])


def test_unsure_tracks_stay_their_own_character_and_linking_uses_the_median():
    rng = np.random.default_rng(0)
    person = rng.normal(size=128)
    a = np.stack([person + 0.05 * rng.normal(size=128) for _ in range(3)])
    outlier = a.copy()
    outlier[0] = rng.normal(size=128)                   # one odd chip (a blink) among three
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    odd = outlier / np.linalg.norm(outlier, axis=1, keepdims=True)
    identities = {"T0": TrackIdentity(unit, np.ones(3, np.float32), True),
                  "T1": TrackIdentity(odd, np.ones(3, np.float32), True),
                  "T2": TrackIdentity(unit[:1], np.ones(1, np.float32), False)}   # same face, but unsure
    distance = track_distances([identities[k] for k in ("T0", "T1", "T2")])
    assert distance[0, 1] < 0.2 and np.isinf(distance[0, 2]) and np.isinf(distance[1, 2])
    tracks = [_track("T0", [0.0, 0.25, 0.5]), _track("T1", [2.0, 2.25, 2.5]), _track("T2", [4.0, 4.25, 4.5])]
    characters = build_characters(tracks, identities, threshold=0.4)
    assert sorted(c.track_ids for c in characters) == [["T0", "T1"], ["T2"]]


# --------------------------------------------------------------------- edited footage (identity set)


@pytest.fixture(scope="module")
def run_edit(extractor, media_dir, tmp_path_factory):
    """Writes an edit of the shared clips, runs the visual pass on it; returns (result, track -> person)."""
    folder = tmp_path_factory.mktemp("edits")

    def run(edit):
        path = em.write_edit(edit, media_dir, folder / f"{edit.name}.mp4")
        result = extractor(path)
        return result, em.label_tracks(edit, result.tracks, em.source_sizes(media_dir, [edit]))

    return run


def _people_of_characters(result, labels):
    return sorted(sorted(labels[t] for t in c.track_ids) for c in result.characters)


@pytest.mark.slow
def test_shot_reverse_shot_interview_gives_host_and_guest(run_edit):
    """Host 0-2 s, guest 2-4 s, host 4-6 s as close-ups: never on screen together, still two people."""
    result, labels = run_edit(em.shot_reverse_shot())
    assert [labels[t.id] for t in result.tracks] == ["host", "guest", "host"]
    assert _people_of_characters(result, labels) == [["guest"], ["host", "host"]]


@pytest.mark.slow
def test_montage_of_five_different_people_merges_no_one(run_edit):
    result, labels = run_edit(em.montage(0.0))
    assert sorted(labels.values()) == ["face1", "face2", "guest", "host", "reader"]
    assert len(result.characters) == 5


@pytest.mark.slow
def test_same_person_across_shots_at_two_scales_is_one_character(run_edit):
    """face1 as a close-up (about 240 px), then a medium shot (about 110 px) off-centre: one person."""
    result, labels = run_edit(em.same_person_scales("retalking_face1.mp4", None, (1.0, 0.45)))
    assert len(result.tracks) == 2 and set(labels.values()) == {"face1"}
    assert min(em.face_size(t) for t in result.tracks) < 0.6 * max(em.face_size(t) for t in result.tracks)
    assert len(result.characters) == 1


def test_chips_are_cut_and_released_when_a_track_closes(extractor, media_dir):
    """Across a cut, the closed track's faces are embedded and freed at once, not held to the end."""
    first = [f for f in iter_frames(media_dir / "retalking_face1.mp4") if f.t < 1.5]
    second = [f for f in iter_frames(media_dir / "retalking_face2.mp4") if f.t < 1.0]
    tracker, chips = FaceTracker(), TrackChips(extractor.embedder)
    for k, frame in enumerate(first + second):
        t, shot = k * 0.25, int(k >= len(first))
        found = extractor.detector.detect([frame.image], [t])[0]
        for track_id, detection in zip(tracker.update(t, shot, found, frame.image), found, strict=True):
            chips.offer(track_id, frame.image, detection)
        closed = tracker.take_closed()
        chips.discard(closed.dropped)
        chips.close([c.id for c in closed.kept])
        if shot == 1:   # the first shot's track closed at the cut: embedded, its face images gone
            assert list(chips.identities) == ["T0"] and "T0" not in chips.faces
            assert sum(len(h) for h in chips.faces.values()) <= chips.capacity
    tracker.finish()
    chips.close([c.id for c in tracker.take_closed().kept])
    assert sorted(chips.identities) == ["T0", "T1"] and chips.faces == {}
