"""Bad input to ``pipeline run``: one clear line, a non-zero exit, nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.run import TIMELINE_NAME
from tests.conftest import REPO_ROOT


def write_video(path: Path, frames: list[np.ndarray], audio: np.ndarray | None = None) -> Path:
    import av_clips

    return av_clips.write_clip(path, frames, audio)


def run_cli(*args: str) -> int:
    return main(["-q", "run", *map(str, args)])


def assert_refused(capsys, code: int, out: Path, phrase: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert phrase in err, err
    assert len([line for line in err.splitlines() if "ERROR" in line or phrase in line]) == 1, err
    assert not out.exists(), "a refused run leaves no output folder"


@pytest.fixture(scope="module")
def face_frames(face1):
    return [np.ascontiguousarray(face1.frames[i % len(face1.frames)]) for i in range(75)]  # 3 s at 25 fps


def test_missing_file(tmp_path, capsys):
    assert_refused(capsys, run_cli(tmp_path / "nope.mp4", "-o", tmp_path / "out"), tmp_path / "out", "does not exist")


def test_directory(tmp_path, capsys):
    assert_refused(capsys, run_cli(tmp_path, "-o", tmp_path / "out"), tmp_path / "out", "is a directory")


def test_not_a_video(tmp_path, capsys):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are meeting notes, not a video\n" * 50)
    assert_refused(capsys, run_cli(fake, "-o", tmp_path / "out"), tmp_path / "out", str(fake))


def test_audio_only(media_dir, tmp_path, capsys):
    assert_refused(capsys, run_cli(media_dir / "jfk.flac", "-o", tmp_path / "out"), tmp_path / "out", "jfk.flac")


def test_truncated_video(media_dir, tmp_path, capsys):
    data = (media_dir / "visualvoice_interview.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 5])
    assert_refused(capsys, run_cli(cut, "-o", tmp_path / "out"), tmp_path / "out", "cut.mp4")


def test_shorter_than_a_second(media_dir, tmp_path, capsys):
    code = run_cli(media_dir / "deep_lip_reading_demo.mp4", "-o", tmp_path / "out")
    assert_refused(capsys, code, tmp_path / "out", "at least 1 s")


def test_unwritable_output(media_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = run_cli(media_dir / "visualvoice_interview.mp4", "-o", blocker / "out")
    assert_refused(capsys, code, blocker / "out", "output")


def test_checkpoint_that_does_not_fit(media_dir, tmp_path, capsys):
    from ramer_core.config import RamerConfig
    from ramer_core.model import RamerModel

    wrong = tmp_path / "mosei-checkpoint"
    RamerModel(RamerConfig(hidden_size=32, num_heads=2, ffn_size=32, text_layers=1, visual_layers=1,
                           acoustic_layers=1, queue_size=64)).save_pretrained(wrong)   # MOSEI's 300/35/74
    code = run_cli(media_dir / "visualvoice_interview.mp4", "-o", tmp_path / "out", "--checkpoint", wrong)
    assert_refused(capsys, code, tmp_path / "out", "does not fit")


def test_no_faces(tmp_path, capsys):
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(120, 30, (240, 320, 3)), 0, 255).astype(np.uint8) for _ in range(50)]
    video = write_video(tmp_path / "faceless.mp4", frames, 0.01 * rng.standard_normal(32000))
    assert_refused(capsys, run_cli(video, "-o", tmp_path / "out"), tmp_path / "out", "no faces")


def test_a_late_failure_in_an_existing_folder_leaves_no_decoded_audio(tmp_path, capsys):
    """The folder was there before, so it stays; the audio the run decoded into its stage folder goes."""
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(120, 30, (240, 320, 3)), 0, 255).astype(np.uint8) for _ in range(50)]
    speech = np.sin(np.linspace(0, 2000 * np.pi, 32000)) * (np.arange(32000) % 8000 < 5000)   # tone bursts
    video = write_video(tmp_path / "faceless.mp4", frames, 0.3 * speech)
    out = tmp_path / "existing"
    out.mkdir()
    assert run_cli(video, "-o", out) == 2
    assert "no faces" in capsys.readouterr().err
    assert not list(out.rglob("*.f32")), list(out.rglob("*"))


def test_video_without_audio(runner, face_frames, tmp_path, capsys):
    video = write_video(tmp_path / "mute.mp4", face_frames)
    result = runner.run(video, tmp_path / "out")
    assert result.document["segments"] == []
    assert {e["role"] for e in result.document["timeline"]} == {"listener"}
    assert all(e["modalities"] == ["visual"] for e in result.document["timeline"])
    assert any("no audio" in w for w in result.document["provenance"]["warnings"])
    capsys.readouterr()
    assert_refused(capsys, run_cli(video, "-o", tmp_path / "strict", "--strict"), tmp_path / "strict", "no audio")


def test_silence(runner, face_frames, tmp_path, capsys):
    video = write_video(tmp_path / "silent.mp4", face_frames, np.zeros(48000))
    result = runner.run(video, tmp_path / "out")
    assert result.document["segments"] == [] and result.document["timeline"]
    assert any("no speech" in w for w in result.document["provenance"]["warnings"])
    capsys.readouterr()
    assert_refused(capsys, run_cli(video, "-o", tmp_path / "strict", "--strict"), tmp_path / "strict", "no speech")


def test_real_exit_status_and_single_line(tmp_path):
    """As a user sees it: a real process, exit status 2, one line on stderr, no traceback."""
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", str(tmp_path / "missing.mkv")],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing.mkv does not exist" in lines[0], done.stderr
    assert not (REPO_ROOT / "out" / "missing").exists()


def test_help_documents_exit_status():
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--help"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0
    assert "exit status" in done.stdout and "130" in done.stdout and TIMELINE_NAME in done.stdout
