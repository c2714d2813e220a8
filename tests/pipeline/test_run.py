"""``pipeline run`` end to end on real footage: the JSON, the characters, the cache, resume."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest

from pipeline.run import STAGE_FOLDER, TIMELINE_NAME
from pipeline.timeline import SCHEMA_PATH

STAGES = {"visual", "vad", "asr", "mouths", "diarization", "speaking", "acoustic", "text", "scoring"}


def check_document(document: dict) -> None:
    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))
    ids = {c["id"] for c in document["characters"]}
    segment_ids = {s["id"] for s in document["segments"]}
    for segment in document["segments"]:
        assert segment["text"].strip(), segment
        assert segment["character"] is None or segment["character"] in ids
        assert segment["start"] < segment["end"]
        for word in segment["words"]:
            assert segment["start"] - 1e-3 <= word["start"] <= word["end"] <= segment["end"] + 1e-3
    for entry in document["timeline"]:
        assert entry["character"] in ids
        assert entry["segment"] is None or entry["segment"] in segment_ids
        assert set(entry["probs"]) == set(document["model"]["labels"])
        assert all(0.0 <= p <= 1.0 for p in entry["probs"].values())
        if entry["role"] == "listener":
            assert entry["modalities"] == ["visual"], entry
        else:
            assert "visual" in entry["modalities"] and "acoustic" in entry["modalities"], entry


def test_interview_timeline(interview_run):
    result, out = interview_run
    document = json.loads((out / TIMELINE_NAME).read_text())
    assert document == result.document
    check_document(document)
    assert len(document["characters"]) == 2
    assert document["segments"], "the interview is full of speech"
    assert sum(s["character"] is not None for s in document["segments"]) >= len(document["segments"]) // 2
    roles = {e["role"] for e in document["timeline"]}
    assert roles == {"speaker", "listener"}
    # both characters get a timeline, speaking and listening
    for character in document["characters"]:
        assert {e["role"] for e in document["timeline"] if e["character"] == character["id"]} >= {"listener"}
        assert character["screen_time"] > 10.0
        thumbnail = character["thumbnail"]
        assert (out / thumbnail["file"]).stat().st_size > 1000
    # host left, guest right: their thumbnails are on different halves of the frame
    xs = sorted((c["thumbnail"]["box"][0] + c["thumbnail"]["box"][2]) / 2 for c in document["characters"])
    assert xs[0] < 640 < xs[1]
    provenance = document["provenance"]
    assert set(provenance["stages"]) == STAGES
    assert not any(stage["cached"] for stage in provenance["stages"].values())
    assert provenance["models"]["ramer"]["path"]


def test_second_run_recomputes_nothing(runner, media_dir, interview_run):
    first, out = interview_run
    ran = []
    second = runner.run(media_dir / "visualvoice_interview.mp4", out,
                        on_stage_done=lambda stage, record: ran.append(stage) if not record.cached else None)
    assert ran == []
    assert set(second.stages) == STAGES and all(r.cached for r in second.stages.values())
    strip = lambda d: {k: v for k, v in d.items() if k != "provenance"}  # noqa: E731
    assert strip(second.document) == strip(first.document)


class Interrupted(Exception):
    pass


def test_interrupted_run_resumes(runner, media_dir, interview_run, tmp_path):
    _, finished = interview_run
    out = tmp_path / "resume"
    shutil.copytree(finished / STAGE_FOLDER, out / STAGE_FOLDER)
    for stage in ("speaking", "text", "scoring"):   # as if killed after diarization
        (out / STAGE_FOLDER / f"{stage}.json").unlink()

    def stop_after_text(stage, record):
        if stage == "text":
            raise Interrupted

    with pytest.raises(Interrupted):
        runner.run(media_dir / "visualvoice_interview.mp4", out, on_stage_done=stop_after_text)
    assert not (out / TIMELINE_NAME).exists()
    ran = []
    result = runner.run(media_dir / "visualvoice_interview.mp4", out,
                        on_stage_done=lambda stage, record: ran.append(stage) if not record.cached else None)
    assert ran == ["scoring"]   # speaking, acoustic and text were finished before the interruption
    check_document(result.document)


def test_changed_setting_recomputes_that_stage_and_later(runner, media_dir, interview_run, tmp_path):
    from pipeline.config import PipelineConfig
    from pipeline.run import PipelineRunner

    _, finished = interview_run
    out = tmp_path / "changed"
    shutil.copytree(finished / STAGE_FOLDER, out / STAGE_FOLDER)
    config = PipelineConfig.model_validate({"moments": {"listen_window_s": 2.0}, "device": "cpu"})
    changed = PipelineRunner(config)
    changed.stages = runner.stages  # same models; only the moment windows differ
    ran = []
    changed.run(media_dir / "visualvoice_interview.mp4", out,
                on_stage_done=lambda stage, record: ran.append(stage) if not record.cached else None)
    assert ran == ["scoring"]


@pytest.mark.parametrize("order", [{"parallel_audio": False}, {"mouths_beside": False}])
def test_audio_stages_after_the_visual_pass_give_the_same_timeline(runner, media_dir, interview_run, tmp_path, order):
    """The default run has VAD, ASR and acoustic features and then the mouth measurement in a thread beside
    the visual pass; one stage after another (or the mouths alone after it) must give the same timeline
    (nothing shared between the two threads leaks). The audio is decoded once, to a file in the stage folder
    that the audio stages read a span at a time, removed after the speaking stage."""
    from pipeline.config import PipelineConfig
    from pipeline.run import PipelineRunner

    first, _ = interview_run
    sequential = PipelineRunner(PipelineConfig(**order, device="cpu"))
    sequential.stages = runner.stages   # same models
    audio_held = {}

    def on_stage_done(stage, record):
        audio_held[stage] = sequential.audio.held and sequential.audio.path.is_file()

    second = sequential.run(media_dir / "visualvoice_interview.mp4", tmp_path / "sequential",
                            on_stage_done=on_stage_done)
    strip = lambda d: {k: v for k, v in d.items() if k != "provenance"}  # noqa: E731
    assert strip(second.document) == strip(first.document)
    assert audio_held["asr"] and audio_held["acoustic"] and audio_held["diarization"] and audio_held["speaking"]
    assert not audio_held["text"] and not audio_held["scoring"]
    assert sequential.audio.decodes == 1 and not sequential.audio.held
    stage_files = sorted(p.name for p in (tmp_path / "sequential" / ".stages").iterdir())
    assert "acoustic.frames.npy" in stage_files   # the states, read back a segment at a time
    assert not [name for name in stage_files if name.startswith(".")], stage_files   # no audio file, no partials


def test_sample_clip(runner, tmp_path):
    from tests.conftest import REPO_ROOT

    truth = json.loads((REPO_ROOT / "samples" / "two_people.json").read_text())
    result = runner.run(REPO_ROOT / "samples" / "two_people.mp4", tmp_path / "sample")
    check_document(result.document)
    assert len(result.document["characters"]) == len(truth["characters"]) == 2
    assert all(s["character"] is not None for s in result.document["segments"])


def test_a_run_lets_go_of_the_visual_pass_own_objects(runner, tmp_path):
    """Once the mouths are measured, the only face detections alive are the result's (one per detection):
    the pass's own objects, which the feed kept for the mouth measurement, pinned pages of the heap made
    over the whole pass (a long video's memory grew with them), and the measurement's samples are gone."""
    import gc

    from extractors.contracts import FaceDetection
    from extractors.mouth_motion import MouthMeasurement
    from tests.conftest import REPO_ROOT

    def alive(kind) -> int:
        gc.collect()
        return sum(type(o) is kind for o in gc.get_objects())   # not isinstance: dead weak proxies raise

    before = alive(FaceDetection)
    seen = {}

    def count(stage, record):
        if stage == "speaking":
            seen["detections"], seen["measurements"] = alive(FaceDetection) - before, alive(MouthMeasurement)

    result = runner.run(REPO_ROOT / "samples" / "two_people.mp4", tmp_path / "sample", force=True,
                        on_stage_done=count)
    detections = sum(len(track["detections"]) for track in result.document["faces"]["tracks"])
    assert detections > 10
    assert seen == {"detections": detections, "measurements": 0}


@pytest.mark.parametrize(("mib", "expected"), [(16.0, [16 << 20]), (0.5, [1 << 19]), (0.0, [])])
def test_a_runner_fixes_the_mmap_threshold_it_is_configured_with(monkeypatch, mib, expected):
    """The configured threshold reaches glibc once per runner (0: glibc's own sliding threshold)."""
    import pipeline.run
    from pipeline.config import PipelineConfig

    calls = []
    monkeypatch.setattr(pipeline.run, "map_large_allocations", lambda size: calls.append(size) or True)
    pipeline.run.PipelineRunner(PipelineConfig(mmap_threshold_mib=mib, device="cpu"))
    assert calls == expected
    with pytest.raises(ValueError, match="32"):   # more than glibc takes
        PipelineConfig(mmap_threshold_mib=64)
