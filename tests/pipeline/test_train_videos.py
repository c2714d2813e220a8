"""`pipeline train|evaluate --annotations`: RAMer trained on a small MELD-layout corpus of the shared clips.

The corpus points rows at spans of two real talking-head clips through a video column (retalking_face1:
"joy", retalking_face2: "sadness", so there is something to learn), plus rows that cannot be used: a
missing file, a reversed span, an unknown label, an unreadable time. One module fixture extracts the
features once (with the session's loaded pipeline) and fine-tunes the default checkpoint; the other tests
reuse its feature cache and checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.cli import main
from pipeline.scoring import DEFAULT_CHECKPOINT, EmotionScorer
from pipeline.training import corpus as corpus_module
from pipeline.training.annotations import LabelMap, SpanMode, VideoRule, parse_time, read_annotations
from pipeline.training.features import FeatureCache, choose_speaker

LABELS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime,Video"
GOOD_ROWS = [  # (utterance, speaker, emotion, dialogue, utterance id, start, end, video)
    ("", "Ann", "joy", 0, 0, '"00:00:00,000"', '"00:00:02,000"', "retalking_face1.mp4"),
    ("", "Ann", "happy", 0, 1, '"00:00:02,000"', '"00:00:04,000"', "retalking_face1.mp4"),
    ("", "Ann", "joy;surprise", 0, 2, "4.0", "6.0", "retalking_face1.mp4"),
    ("", "Bob", "sadness", 1, 0, '"00:00:00,000"', '"00:00:01,600"', "retalking_face2.mp4"),
    ("", "Bob", "sad", 1, 1, '"00:00:01,600"', '"00:00:03,300"', "retalking_face2.mp4"),
    ("where I chase my own dreams", "Bob", "sadness", 1, 2, "3.3", "4.9", "retalking_face2.mp4"),  # transcript
]
BAD_ROWS = [  # the CSV line each starts on (the header is line 1; the quoted transcript of 'bored' spans two)
    (8, ("", "Cy", "joy", 2, 0, "0.0", "2.0", "not_there.mp4"), "video file not found"),
    (9, ("", "Ann", "joy", 0, 3, "3.0", "2.0", "retalking_face1.mp4"), "is not after StartTime"),
    (10, ('"so,\nbored"', "Ann", "bored", 0, 4, "1.0", "2.0", "retalking_face1.mp4"), "unknown emotion label 'bored'"),
    (12, ("", "Ann", "joy", 0, 5, '"00:0x:01,000"', "2.0", "retalking_face1.mp4"), "StartTime '00:0x:01,000'"),
]
FAST = ["--epochs", "2", "--lr", "1e-3", "--seed", "3"]


def write_corpus(path: Path, rows) -> Path:
    lines = [HEADER]
    for i, (text, speaker, emotion, dialogue, utterance, start, end, video) in enumerate(rows):
        lines.append(f"{i + 1},{text},{speaker},{emotion},x,{dialogue},{utterance},1,1,{start},{end},{video}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def setup(runner, media_dir, tmp_path_factory):
    """The corpus, its feature cache, and the default checkpoint fine-tuned on it (bad rows skipped)."""
    folder = tmp_path_factory.mktemp("corpus")
    csv_path = write_corpus(folder / "corpus.csv", GOOD_ROWS + [row for _, row, _ in BAD_ROWS])
    features, checkpoint = folder / "features", folder / "fine-tuned"
    calls = []

    def shared_runner(config, checkpoint, device):  # the session's pipeline: its models are loaded once
        calls.append(checkpoint)
        return runner

    records = _Records()
    logging.getLogger("pipeline").addHandler(records)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(corpus_module, "build_runner", shared_runner)
        corpus = ["--annotations", str(csv_path), "--videos", str(media_dir), "--video-column", "Video",
                  "--features", str(features)]
        code = main(["-q", "train", *corpus, "--out", str(checkpoint), *FAST])
        yield {"csv": csv_path, "features": features, "checkpoint": checkpoint, "code": code, "calls": calls,
               "corpus": corpus, "log": list(records.messages), "media": media_dir, "records": records}
    logging.getLogger("pipeline").removeHandler(records)


def card_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_bad_rows_are_reported_by_line_and_skipped(setup):
    assert setup["code"] == 0
    assert len(setup["calls"]) == 1, "the pipeline is asked for once, for every video"
    for line, _, reason in BAD_ROWS:
        assert any(f"line {line}: " in m and reason in m for m in setup["log"]), (line, setup["log"])
    card = card_of(setup["checkpoint"])["card"]
    data = card["training_data"]
    assert [b["line"] for b in data["bad_rows"]] == [line for line, _, _ in BAD_ROWS]
    assert data["rows"] == 10 and data["rows_used"] == 6
    assert data["train"]["samples"] + data["valid"]["samples"] == 6
    assert data["modalities_present"] == {"text": 6, "visual": 6, "acoustic": 6}   # all three for every row
    assert "user's labelled videos" in data["corpus"]
    assert card["features"] == {"cached": 0, "extracted": 6, "videos_analysed": 2}
    assert sum(data["speaker_chosen_by"].values()) == 6
    assert set(data["speaker_chosen_by"]) <= {"active speaker", "only face on screen"}   # one face per clip
    sources = [json.loads(p.read_text())["text_source"] for p in (setup["features"] / "rows").glob("*/*.json")]
    assert sorted(sources) == ["Utterance column"] + ["speech recogniser"] * 5
    assert card["trained_modalities"] == ["text", "visual", "acoustic"]
    assert "non-commercial" in card["intended_use"]   # the default checkpoint's licence terms carry over


def test_fine_tuning_changes_the_weights_and_keeps_labels_and_sizes(setup):
    default, tuned = card_of(DEFAULT_CHECKPOINT), card_of(setup["checkpoint"])
    assert tuned["config"]["label_names"] == default["config"]["label_names"] == list(LABELS)
    for key in ("text_dim", "visual_dim", "acoustic_dim", "hidden_size", "use_reconstruction"):
        assert tuned["config"][key] == default["config"][key], key
    # the same input preparation (visual fill, acoustic pooling); no longer marked as the default model
    assert tuned["config"]["extra"] == {k: v for k, v in default["config"]["extra"].items() if k != "default_model"}
    assert "default checkpoint" in tuned["card"]["started_from"]
    # the tuned text blocks the features went through travel with the weights
    layers = "text_layers.safetensors"
    assert (setup["checkpoint"] / layers).read_bytes() == (DEFAULT_CHECKPOINT / layers).read_bytes()
    before = load_file(str(DEFAULT_CHECKPOINT / "model.safetensors"))
    after = load_file(str(setup["checkpoint"] / "model.safetensors"))
    assert before.keys() == after.keys() and all(before[k].shape == after[k].shape for k in before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, changed


def test_fine_tuning_moves_the_scores_towards_the_corpus_labels(setup):
    """Each clip's rows carry one label (face1 joy, face2 sadness): the tuned model gives them more weight."""
    from ramer_core.training import predict

    def probs(checkpoint):
        scorer = EmotionScorer.load(checkpoint)
        args = _corpus_args(setup)
        annotations = corpus_module.read_corpus(args, tuple(scorer.labels))
        features, _ = corpus_module.corpus_features(args, annotations, None, scorer)
        dataset = corpus_module.build_dataset(annotations.rows, features, scorer, "check", "")
        return predict(scorer.model, dataset).probs, dataset.labels_matrix().numpy()

    before, labels = probs(None)
    after, _ = probs(setup["checkpoint"])
    assert float((after * labels).sum() / labels.sum()) > float((before * labels).sum() / labels.sum()) + 0.01


def _corpus_args(setup):
    import argparse

    return argparse.Namespace(annotations=setup["csv"], videos=setup["media"], video_column="Video",
                              video_pattern=None, span="auto", on_bad_rows="skip", labels=None,
                              features=setup["features"], config=None, quiet=True)


def test_reject_exits_2_naming_the_rows_and_writes_nothing(setup, tmp_path, capsys):
    out = tmp_path / "never"
    cache_before = sorted(p.name for p in setup["features"].rglob("*"))
    calls = len(setup["calls"])
    assert main(["train", *setup["corpus"], "--out", str(out), "--on-bad-rows", "reject", *FAST]) == 2
    err = capsys.readouterr().err
    assert "4 of 10 rows unusable" in err and "nothing written" in err
    assert all(f"line {line}: " in err for line, _, _ in BAD_ROWS)
    assert not out.exists()
    assert sorted(p.name for p in setup["features"].rglob("*")) == cache_before
    assert len(setup["calls"]) == calls, "rejected before any extraction"


def test_rerun_reads_the_feature_cache_and_trains_from_scratch(setup, tmp_path):
    out = tmp_path / "scratch"
    calls = len(setup["calls"])
    setup["records"].messages.clear()
    assert main(["train", *setup["corpus"], "--out", str(out), "--from", "scratch", "--hidden-size", "32",
                 "--layers", "1", "--heads", "4", "--queue-size", "64", *FAST]) == 0
    assert len(setup["calls"]) == calls, "no extractor ran: every row came from the feature cache"
    card = card_of(out)
    assert card["card"]["features"] == {"cached": 6, "extracted": 0, "videos_analysed": 0}
    summary = next(m for m in setup["records"].messages if m.startswith("features: "))
    seconds = float(summary.rsplit(",", 1)[1].split()[0])
    assert seconds < 2.0, summary   # reading six small stores, against ~15-30 s of extraction
    assert card["card"]["started_from"].startswith("random initialisation")
    assert card["config"]["hidden_size"] == 32 and card["config"]["label_names"] == list(LABELS)
    assert "visual_fill" not in card["config"]["extra"]   # a new model reads every visual column
    # its features came through the default's tuned text blocks, which it carries
    assert EmotionScorer.load(out).text_tuned_layers.read_bytes() == \
        (DEFAULT_CHECKPOINT / "text_layers.safetensors").read_bytes()


def test_trained_checkpoint_runs_in_the_pipeline(setup, media_dir, tmp_path):
    """`pipeline run --checkpoint` scores with it (the analysis reused from the corpus's stage cache)."""
    from pipeline.stage_cache import file_sha256

    video = media_dir / "retalking_face1.mp4"
    analysed = FeatureCache(setup["features"]).video_folder(file_sha256(video))
    out = tmp_path / "run"
    shutil.copytree(analysed / ".stages", out / ".stages")
    assert main(["-q", "run", str(video), "-o", str(out), "--checkpoint", str(setup["checkpoint"]), "--device",
                 "cpu"]) == 0
    document = json.loads((out / "timeline.json").read_text())
    assert document["model"]["checkpoint"] == str(setup["checkpoint"])
    assert document["model"]["labels"] == list(LABELS)
    assert document["timeline"] and all(set(e["probs"]) == set(LABELS) for e in document["timeline"])
    assert document["provenance"]["stages"]["visual"]["cached"] is True


def test_evaluate_prints_the_metrics_table(setup, tmp_path, capsys):
    report = tmp_path / "metrics.json"
    assert main(["-q", "evaluate", "--checkpoint", str(setup["checkpoint"]), *setup["corpus"],
                 "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "| overall | 6 |" in printed and "micro_f1" in printed
    metrics = json.loads(report.read_text())
    assert 0.0 <= metrics["overall"]["micro_f1"] <= 1.0


def test_meld_clips_by_their_file_name_rule_are_whole_utterances(setup, tmp_path, capsys):
    """MELD's layout as released: dia{D}_utt{U}.mp4 clips, each the whole utterance (episode times only
    checked), transcripts in the Utterance column. The clips' analyses come from the corpus's stage cache."""
    videos = tmp_path / "clips"
    videos.mkdir()
    (videos / "dia7_utt0.mp4").symlink_to(setup["media"] / "retalking_face1.mp4")
    (videos / "dia7_utt1.mp4").symlink_to(setup["media"] / "retalking_face2.mp4")
    meld = tmp_path / "meld.csv"
    meld.write_text(
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
        '1,"My biggest weakness, asking for help.",Ann,joy,positive,7,0,8,21,"00:16:16,059","00:16:21,731"\n'
        "2,In the heart of my district.,Bob,sadness,negative,7,1,8,21,\"00:16:21,940\",\"00:16:26,442\"\n",
        encoding="utf-8")
    calls = len(setup["calls"])
    assert main(["-q", "evaluate", "--checkpoint", str(setup["checkpoint"]), "--annotations", str(meld),
                 "--videos", str(videos), "--features", str(setup["features"])]) == 0
    assert "| overall | 2 |" in capsys.readouterr().out
    assert len(setup["calls"]) == calls + 1   # new rows (whole files, own transcripts): extracted
    metas = [json.loads(p.read_text()) for p in (setup["features"] / "rows").glob("*/*.json")]
    whole = [m for m in metas if m["row"] in ("dia7_utt0", "dia7_utt1")]
    assert sorted(m["span"][1] for m in whole) == pytest.approx([5.0, 6.1], abs=0.05)   # the clips' durations
    assert {m["text_source"] for m in whole} == {"Utterance column"}


# ------------------------------------------------------------------------------------ no models needed


def test_times_labels_and_the_meld_file_rule(tmp_path, media_dir):
    assert parse_time("00:16:16,059") == pytest.approx(976.059)
    assert parse_time("01:02.5") == pytest.approx(62.5) and parse_time("3.25") == 3.25
    for bad in ("", "1:75:00", "-2", "nan", "12:3x"):
        with pytest.raises(ValueError):
            parse_time(bad)
    labels = LabelMap.from_arguments(LABELS, ["excited=joy"])
    assert labels.parse("Surprise; happy") == ("joy", "surprise")
    assert labels.parse("angry|excited") == ("anger", "joy")
    with pytest.raises(ValueError, match="bored"):
        labels.parse("joy;bored")
    # MELD's own layout: files named dia{D}_utt{U}.mp4, each the whole utterance (the times are the episode's)
    for name in ("dia3_utt0.mp4", "dia3_utt1.mp4"):
        (tmp_path / name).symlink_to(media_dir / "retalking_face1.mp4")
    meld = tmp_path / "meld.csv"
    meld.write_text(
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
        '1,"Oh, hi!",Joey,joy,positive,3,0,8,21,"00:16:16,059","00:16:21,731"\n'
        '2,Hey.,Rachel,neutral,neutral,3,1,8,21,"00:16:21,940","00:16:23,442"\n'
        '3,Huh?,Ross,surprise,neutral,3,2,8,21,"00:16:23,442","00:16:26,389"\n', encoding="utf-8")
    read = read_annotations(meld, labels, VideoRule(tmp_path))
    assert [r.video.name for r in read.rows] == ["dia3_utt0.mp4", "dia3_utt1.mp4"]
    assert all(r.whole_file for r in read.rows) and read.rows[0].text == "Oh, hi!"
    assert [(b.line, "dia3_utt2.mp4" in b.reason) for b in read.bad] == [(4, True)]
    spans = read_annotations(meld, labels, VideoRule(tmp_path, span=SpanMode.VIDEO), check_files=False)
    assert not any(r.whole_file for r in spans.rows)


def test_the_real_meld_test_split_reads_with_its_one_empty_span_reported(data_dir, tmp_path):
    read = read_annotations(data_dir / "meld" / "test_sent_emo.csv", LabelMap(LABELS), VideoRule(tmp_path),
                            check_files=False)
    # 2,610 utterances, one of which starts and ends at 0:12:32,632 (MELD's own data)
    assert len(read.rows) == 2609 and [b.line for b in read.bad] == [1442]
    assert "is not after StartTime" in read.bad[0].reason
    assert {label for r in read.rows for label in r.labels} == set(LABELS)


def test_a_corpus_missing_columns_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("Dialogue_ID,Utterance_ID,Emotion\n0,0,joy\n", encoding="utf-8")
    assert main(["train", "--annotations", str(bad), "--videos", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--features", str(tmp_path / "f")]) == 2
    assert "missing column(s) Speaker, StartTime, EndTime" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


class _Visual:
    """Just enough of a VisualResult: characters with one track of detections each."""

    def __init__(self, faces: dict[str, tuple[int, float]]):   # id -> (detections in [0, 2) s, box side)
        from extractors.contracts import Character, FaceDetection, FaceTrack

        self.characters, self.tracks, self.rows = [], [], {}
        for i, (cid, (count, side)) in enumerate(faces.items()):
            detections = [FaceDetection(t=k * 2.0 / max(count, 1), box=(0, 0, side, side), score=0.9,
                                        landmarks=np.zeros((5, 2))) for k in range(count)]
            self.tracks.append(FaceTrack(f"T{i}", 0, detections))
            self.characters.append(Character(cid, [f"T{i}"], None, np.zeros(3)))

    def track(self, track_id):
        return next(t for t in self.tracks if t.id == track_id)

    def sequence(self, cid, start, end):
        track = self.track(next(c for c in self.characters if c.id == cid).track_ids[0])
        rows = [d for d in track.detections if start <= d.t < end]
        return np.zeros(len(rows)), np.zeros((len(rows), 20), np.float32)


def test_the_speaker_is_the_attributed_face_else_the_only_or_dominant_one():
    from extractors.contracts import SpeechSegment

    two = _Visual({"C0": (8, 100.0), "C1": (8, 100.0)})
    said = [SpeechSegment("S0", 0.2, 1.5, "hello", [], character="C1")]
    assert choose_speaker(two, said, 0.0, 2.0) == ("C1", "active speaker")
    assert "attributed to none" in choose_speaker(two, [SpeechSegment("S0", 0.2, 1.5, "hi", [])], 0.0, 2.0)
    assert choose_speaker(_Visual({"C0": (8, 100.0)}), [], 0.0, 2.0) == ("C0", "only face on screen")
    assert choose_speaker(_Visual({"C0": (8, 200.0), "C1": (2, 50.0)}), [], 0.0, 2.0) == \
        ("C0", "dominant face on screen")
    assert "no face on screen" in choose_speaker(two, said, 5.0, 6.0)


def test_features_for_a_checkpoint_reading_other_acoustic_features_are_refused(setup, runner, tmp_path):
    """A checkpoint trained on whisper states after another number of blocks, or over other tuned text blocks,
    cannot take what the pipeline would extract: refused before anything is extracted or stored."""
    from types import SimpleNamespace

    from pipeline.errors import UserError

    args = _corpus_args(setup)
    args.features = tmp_path / "features"          # an empty store: extraction would be needed
    annotations = corpus_module.read_corpus(args, tuple(runner.scorer.labels))
    other = SimpleNamespace(acoustic_kind="whisper", acoustic_whisper_blocks=(runner.scorer.acoustic_whisper_blocks or 0) + 1,
                            text_tuned_layers=runner.scorer.text_tuned_layers)
    other_layers = tmp_path / "text_layers.safetensors"
    other_layers.write_bytes(b"blocks tuned elsewhere")
    other_text = SimpleNamespace(acoustic_kind=runner.scorer.acoustic_kind,
                                 acoustic_whisper_blocks=runner.scorer.acoustic_whisper_blocks,
                                 text_tuned_layers=other_layers)
    for scorer, words in ((other, "acoustic features; the checkpoint reads whisper"),
                          (other_text, "encode text with .*; the checkpoint reads MiniLM with tuned blocks")):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(corpus_module, "build_runner", lambda config, checkpoint, device: runner)
            with pytest.raises(UserError, match=words):
                corpus_module.corpus_features(args, annotations, None, scorer)
    assert not any(p.is_file() for p in args.features.rglob("*"))
    # the same choice as the pipeline's: extracted (the store fills)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(corpus_module, "build_runner", lambda config, checkpoint, device: runner)
        features, _ = corpus_module.corpus_features(args, annotations, None, runner.scorer)
    assert features
