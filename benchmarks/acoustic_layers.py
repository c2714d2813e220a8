"""Which acoustic representation carries emotion: the librosa set against each block of the whisper encoder.

    .venv/bin/python benchmarks/acoustic_layers.py [--model whisper-tiny.en] [--features FILE.npz]
        [--out benchmarks/results/acoustic_layers.md]

Every RAVDESS speech clip (1,440; "calm" counted as neutral, 7 labels) goes through the pipeline's path for
one speaker: silero VAD regions, then the frames inside them. Each representation is pooled per clip (mean
and standard deviation over the speech frames) and read by a logistic regression (standardised inputs,
balanced class weights, C chosen on the validation actors) with actors held out as in the default model:
actors 1-14 train, 15-18 validation, 19-24 test. The metric is unweighted accuracy (balanced accuracy).

Representations: `extractors.acoustic_features.AcousticFeatureExtractor` (47-d librosa frames) and the
whisper encoder's states after each of its blocks (block k = the first k blocks run, as
``WhisperEncoderFeatures(blocks=k)`` gives them; "all" = the whole encoder with its final layer norm).
The pooled features are written to ``--features`` (default under $RAMER_CACHE_DIR) and reused when present.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

CACHE = Path(os.environ.get("RAMER_CACHE_DIR", Path.home() / ".cache" / "ramer-timelines"))
# label index order of the cached features (the clips and their labels: default_model_features.ravdess_files)
LABELS = ("neutral", "joy", "sadness", "anger", "fear", "disgust", "surprise")
TRAIN, VALID = range(1, 15), range(15, 19)


def pooled(frames: np.ndarray) -> np.ndarray:
    """[T, D] -> [2 D]: mean and standard deviation over time."""
    return np.concatenate([frames.mean(0), frames.std(0)]).astype(np.float32)


def extract(model: str, out: Path) -> None:
    import torch

    from extractors.acoustic_features import AcousticFeatureExtractor, WhisperEncoderFeatures
    from extractors.audio import SAMPLE_RATE, load_audio
    from extractors.contracts import SpeakerTurn
    from extractors.io import write_atomically
    from extractors.vad import VoiceActivityDetector

    torch.set_num_threads(1)
    whole = WhisperEncoderFeatures(model, blocks=None, device="cpu")
    depth = len(whole.encoder.blocks)
    caught: dict[int, torch.Tensor] = {}
    for k, block in enumerate(whole.encoder.blocks):   # block k's output = WhisperEncoderFeatures(blocks=k + 1)
        block.register_forward_hook(lambda module, args, output, k=k: caught.__setitem__(k + 1, output[0]))
    librosa_features, vad = AcousticFeatureExtractor(), VoiceActivityDetector()
    from default_model_features import ravdess_files  # the same clips and labels as the default model

    files = ravdess_files()
    columns: dict[str, list[np.ndarray]] = {}
    labels, actors = [], []
    started = time.perf_counter()
    for count, (_, path, label, actor) in enumerate(files):
        labels.append(LABELS.index(label))
        actors.append(int(actor))
        audio = load_audio(path)
        duration = len(audio) / SAMPLE_RATE
        turns = [SpeakerTurn(r.start, r.end, "S") for r in vad.detect(audio)] or [SpeakerTurn(0.0, duration, "S")]
        last = whole.frames(audio)                                           # fills `caught` too
        states = {f"block{k}": caught[k].numpy()[: len(last)] for k in range(1, depth + 1)}
        states["all"] = last
        for name, frames in states.items():
            columns.setdefault(name, []).append(pooled(whole.speaker_span(frames, turns, "S", 0.0, duration)))
        frames = librosa_features.frames(audio)
        columns.setdefault("librosa", []).append(pooled(librosa_features.speaker_span(frames, turns, "S", 0.0, duration)))
        if count % 200 == 0:
            print(f"{count}/{len(files)} clips, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    arrays = {name: np.stack(rows) for name, rows in columns.items()}

    def save(path: Path) -> None:
        with open(path, "wb") as handle:   # a handle: np.savez would append .npz to the temporary name
            np.savez(handle, labels=np.array(labels), actors=np.array(actors), **arrays)

    write_atomically(out, save)


def logistic_regression(x: np.ndarray, labels: np.ndarray, actors: np.ndarray) -> tuple[float, float, float]:
    """(validation UA, chosen C, test UA)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, valid, test = np.isin(actors, TRAIN), np.isin(actors, VALID), actors >= 19
    best = None
    for c in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced"))
        model.fit(x[train], labels[train])
        score = balanced_accuracy_score(labels[valid], model.predict(x[valid]))
        if best is None or score > best[0]:
            best = (score, c, model)
    score, c, model = best
    return score, c, balanced_accuracy_score(labels[test], model.predict(x[test]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--features", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    features = args.features or CACHE / "benchmarks" / f"acoustic_layers_{args.model}.npz"
    started = time.perf_counter()
    if not features.exists():
        features.parent.mkdir(parents=True, exist_ok=True)
        extract(args.model, features)
    extraction = time.perf_counter() - started
    data = np.load(features)
    labels, actors = data["labels"], data["actors"]
    names = ["librosa", *sorted((n for n in data.files if n.startswith("block")), key=lambda n: int(n[5:])), "all"]
    lines = [f"# Acoustic representations for emotion (benchmarks/acoustic_layers.py, {args.model})", "",
             f"Machine: {cpu_model()}, Python {platform.python_version()}. RAVDESS speech, {len(labels)} clips, "
             "7 labels (calm -> neutral); logistic regression on the mean and standard deviation of the speech "
             "frames; actors 1-14 train, 15-18 validation (chooses C), 19-24 test. Unweighted accuracy; chance 0.143.",
             f"Extraction {extraction:.0f} s (0 when the pooled features were cached).", "",
             "| representation | dims | validation UA | C | test UA |", "|---|---:|---:|---:|---:|"]
    for name in names:
        x = data[name]
        valid, c, test = logistic_regression(x, labels, actors)
        what = {"librosa": "librosa set (47-d frames)", "all": "whisper encoder, all blocks + ln_post"}.get(
            name, f"whisper encoder after {name[5:]} block(s)")
        lines.append(f"| {what} | {x.shape[1]} | {valid:.3f} | {c:g} | {test:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from extractors.io import write_atomically

        write_atomically(args.out, lambda p: p.write_text(text, encoding="utf-8"))


if __name__ == "__main__":
    main()
