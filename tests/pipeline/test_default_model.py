"""The committed default checkpoint (pipeline/default_model): it loads without running code, has the 7
labels and the extractors' dimensions, says what it may be used for, and reads a happy and an angry
FER2013 face differently when they go in as the visual extractor's per-face vector."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from extractors.acoustic_features import D_ACOUSTIC
from extractors.expression import EXPRESSION_LABELS, INPUT_SIZE, ExpressionClassifier
from extractors.moments import MomentConfig
from extractors.text_features import D_TEXT
from extractors.visual_features import D_VISUAL, VISUAL_FEATURE_NAMES
from ramer_core import RamerBatch, from_pretrained

CHECKPOINT = Path(__file__).resolve().parents[2] / "pipeline" / "default_model"
LABELS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
MELD_ROWS = 400       # the first MELD test utterances (about 3 s through MiniLM)
TUNED_FLOOR = 0.5     # weighted-F1; measured 0.59 with the tuned blocks, 0.28 with the packaged MiniLM's


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return from_pretrained(CHECKPOINT)


def test_labels_dimensions_and_card(model):
    config, card = model.config, model.card
    assert tuple(config.label_names) == LABELS
    assert config.text_dim == D_TEXT
    assert config.visual_dim == D_VISUAL          # the visual extractor's per-face vector, read at run time
    acoustic = config.extra["acoustic_features"]
    assert config.acoustic_dim == (D_ACOUSTIC if acoustic == "librosa" else 384)
    assert config.extra["visual_feature_names"] == list(VISUAL_FEATURE_NAMES)
    assert set(card["visual_fill"]) <= set(VISUAL_FEATURE_NAMES)
    assert "non-commercial" in card["intended_use"]
    assert "CC BY-NC-SA 4.0" in card["licences"]["ravdess"] and "research" in card["licences"]["fer"]
    assert len(card["thresholds"]) == len(LABELS)
    for name in ("meld", "goemotions", "ravdess", "fer"):
        assert name in card["metrics"]["ramer"] and name in card["metrics"]["late_fusion"]


def test_the_shipped_checkpoint_was_trained_by_the_rebuilds_current_plan(model):
    """A change to the rebuild's training plan must come with a rebuilt checkpoint (and its numbers)."""
    from benchmarks.default_model import TrainPlan

    assert model.card["training"] == TrainPlan().serialize()
    per_epoch = model.card["training"]["samples_per_epoch"]
    assert (f"Per epoch {per_epoch['meld']} MELD utterances and {per_epoch['goemotions']} GoEmotions comments"
            in model.card["fusion"])   # the card says how the text sets were mixed


def test_the_text_mixture_benchmark_changes_only_the_two_text_sets_of_the_plan():
    import argparse

    from benchmarks.default_model import TrainPlan
    from benchmarks.text_mixture import mix, mix_plan

    def rest(plan) -> dict:
        return {k: v for k, v in plan.serialize().items() if k not in ("seed", "samples_per_epoch")}

    default, plan = TrainPlan(), mix_plan("9216:0", seed=8)
    assert plan.per_epoch == {**default.per_epoch, "meld": 9216, "goemotions": 0} and plan.seed == 8
    assert rest(plan) == rest(default)
    with pytest.raises(argparse.ArgumentTypeError):
        mix("6144")


def _face_vector(model, classifier: ExpressionClassifier, path: Path) -> np.ndarray:
    """[D_VISUAL] as the checkpoint was trained: expression of the face resized to the model's input,
    every column the card lists in visual_fill set to its constant."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    probs = classifier.predict_crops(cv2.resize(gray, (INPUT_SIZE, INPUT_SIZE))[None])[0]   # [7]
    row = np.zeros(D_VISUAL, np.float32)
    for name, value in model.card["visual_fill"].items():
        row[VISUAL_FEATURE_NAMES.index(name)] = value
    for label, p in zip(EXPRESSION_LABELS, probs, strict=True):
        row[VISUAL_FEATURE_NAMES.index(f"expression_{label}")] = p
    return row


def _first_confident(classifier: ExpressionClassifier, folder: Path, label: str) -> Path:
    """The first PrivateTest face of `folder` that the expression model itself calls `label`."""
    for path in sorted(folder.glob("PrivateTest_*.jpg"))[:200]:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        probs = classifier.predict_crops(cv2.resize(gray, (INPUT_SIZE, INPUT_SIZE))[None])[0]
        if EXPRESSION_LABELS[int(probs.argmax())] == label and probs.max() > 0.6:
            return path
    pytest.fail(f"no confident {label} face in {folder}")


def test_happy_and_angry_faces_read_differently(model, data_dir):
    classifier = ExpressionClassifier(device="cpu")
    happy = _first_confident(classifier, data_dir / "fer2013" / "test" / "happy", "happy")
    angry = _first_confident(classifier, data_dir / "fer2013" / "test" / "angry", "angry")
    faces = torch.from_numpy(np.stack([_face_vector(model, classifier, p) for p in (happy, angry)]))[:, None]  # [2, 1, Dv]
    batch = RamerBatch.single(
        text=torch.zeros(2, 1, model.config.text_dim), visual=faces,
        acoustic=torch.zeros(2, 1, model.config.acoustic_dim),
        text_mask=torch.zeros(2, 1, dtype=torch.bool), visual_mask=torch.ones(2, 1, dtype=torch.bool),
        acoustic_mask=torch.zeros(2, 1, dtype=torch.bool),
        present=torch.tensor([[False, True, False]] * 2))
    with torch.inference_mode():
        probs = model(batch).probs                                                              # [2, 7]
    joy, anger = LABELS.index("joy"), LABELS.index("anger")
    assert int(probs[0].argmax()) == joy
    assert probs[0, joy] > probs[1, joy] + 0.3
    assert probs[1, anger] > probs[0, anger] + 0.1


RAVDESS_EMOTIONS = {"01": "neutral", "03": "joy", "04": "sadness", "05": "anger", "06": "fear", "07": "disgust",
                    "08": "surprise"}


@pytest.mark.slow
def test_held_out_voices_are_read_through_the_pipelines_acoustic_stage(data_dir):
    """RAVDESS clips of two test actors (never trained on), voice only, through the stages `pipeline run`
    builds from the checkpoint (VAD, then the acoustic features the card names): most are read right.
    Fails when the pipeline's acoustic features are not the ones the checkpoint was trained on."""
    from extractors.audio import load_audio
    from extractors.contracts import SpeakerTurn
    from extractors.moments import ModalityInputs
    from pipeline.config import PipelineConfig
    from pipeline.run import PipelineRunner

    runner = PipelineRunner(PipelineConfig(), device="cpu")
    scorer = runner.scorer
    kind = scorer.acoustic_kind
    extractor = runner.stages.get("acoustic" if kind == "librosa" else "acoustic_whisper")
    vad = runner.stages.get("vad")
    clips = [p for actor in ("23", "24") for code in RAVDESS_EMOTIONS
             for p in sorted((data_dir / "ravdess_speech" / f"Actor_{actor}").glob(f"03-01-{code}-*-01-01-*.flac"))[-1:]]  # strong intensity where there is one
    assert len(clips) == 14
    entries, truth = [], []
    for path in clips:
        audio = load_audio(path)
        duration = len(audio) / 16000
        turns = [SpeakerTurn(r.start, r.end, "S") for r in vad.detect(audio)] or [SpeakerTurn(0.0, duration, "S")]
        acoustic = extractor.speaker_span(extractor.frames(audio), turns, "S", 0.0, duration)
        entry = ModalityInputs(path.stem, "C0", "speaker", np.zeros((0, D_TEXT), np.float32),
                               np.zeros((0, D_VISUAL), np.float32), acoustic)
        entries.append(scorer.prepare(entry, runner.config.moments))
        truth.append(RAVDESS_EMOTIONS[path.stem.split("-")[2]])
    from pipeline.scoring import moment_sample
    from ramer_core.datasets.common import collate

    batch = collate([moment_sample([e], 0, scorer.model.config) for e in entries])
    with torch.inference_mode():
        probs = scorer.model(batch).probs.numpy()                                               # [14, 7]
    predicted = [scorer.labels[i] for i in probs.argmax(1)]
    correct = sum(p == t for p, t in zip(predicted, truth, strict=True))
    assert correct >= 7, list(zip(truth, predicted, strict=True))   # chance: 2 of 14


def _text_only_probs(scorer, texts_features: list[np.ndarray]) -> np.ndarray:
    from extractors.moments import ModalityInputs
    from pipeline.scoring import moment_sample
    from ramer_core.datasets.common import collate

    entries = [scorer.prepare(ModalityInputs(f"T{i}", "C0", "speaker", x, np.zeros((0, D_VISUAL), np.float32),
                                             np.zeros((0, scorer.model.config.acoustic_dim), np.float32)),
                              MomentConfig())
               for i, x in enumerate(texts_features)]
    batch = collate([moment_sample([e], 0, scorer.model.config) for e in entries])
    with torch.inference_mode():
        return scorer.model(batch).probs.numpy()


@pytest.mark.slow
def test_held_out_transcripts_are_read_through_the_pipelines_tuned_text_stage(data_dir):
    """MELD test utterances (never trained on), text only, through the text stage `pipeline run` builds from the
    checkpoint: it loads the tuned blocks the checkpoint ships, and they read the transcripts better than the
    packaged MiniLM's features do through the same model. Fails when the pipeline's text encoder is not the one
    the checkpoint was trained over."""
    import pandas as pd
    from sklearn.metrics import f1_score

    from extractors.text_features import TextEncoder
    from pipeline.config import PipelineConfig
    from pipeline.run import PipelineRunner

    runner = PipelineRunner(PipelineConfig(), device="cpu")
    scorer, text = runner.scorer, runner.stages.get("text")
    assert scorer.text_tuned_layers == CHECKPOINT / "text_layers.safetensors" and text.tuned_from is not None
    frame = pd.read_csv(data_dir / "meld" / "test_sent_emo.csv").iloc[:MELD_ROWS]
    truth = [LABELS.index(e) for e in frame.Emotion]
    tuned = _text_only_probs(scorer, [text.token_embeddings(t) for t in frame.Utterance])
    packaged = TextEncoder(device="cpu")
    untuned = _text_only_probs(scorer, [packaged.token_embeddings(t) for t in frame.Utterance])
    tuned_f1 = f1_score(truth, tuned.argmax(1), average="weighted")
    untuned_f1 = f1_score(truth, untuned.argmax(1), average="weighted")
    assert tuned_f1 > TUNED_FLOOR and tuned_f1 > untuned_f1 + 0.1, (tuned_f1, untuned_f1)


def test_the_rebuild_tunes_the_text_blocks_without_the_comments_the_fusion_trains_on(monkeypatch):
    """The default model's rebuild holds the GoEmotions chunks its fusion models train on out of the text
    tuning (all chunks are tuned on only when the fusion takes every one), and its card says which."""
    from benchmarks import default_model

    cached = [f"goemotions_train_{i:02d}" for i in range(9)]
    monkeypatch.setattr(default_model, "goemotions_train_names", lambda chunks=None: cached[: chunks or len(cached)])
    assert default_model.tuning_chunks(1) == cached[1:] and default_model.fusion_texts_held_out(1)
    assert default_model.tuning_chunks(3) == cached[3:]
    for every in (0, 9, 12):
        assert default_model.tuning_chunks(every) == cached and not default_model.fusion_texts_held_out(every)
    tuning = json.loads((CHECKPOINT / "config.json").read_text())["card"]["text_tuning"]
    assert "held-out GoEmotions comments" in tuning["how"]
    assert tuning["texts"]["goemotions"] == 43410 - 5000   # GoEmotions-Ekman train less the fusion's first chunk
