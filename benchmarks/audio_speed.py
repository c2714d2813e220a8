"""Real-time factor of each audio and text stage (seconds of compute per second of audio).

    .venv/bin/python benchmarks/audio_speed.py [--runs 3] [--shared ../shared]

Runs on CUDA when torch sees a GPU; `CUDA_VISIBLE_DEVICES= ` forces the CPU. Inputs: jfk.flac
(11 s), the pyannote sample (30 s) and both concatenated (41 s, written to a temporary WAV so the
decode stage reads a file). Models are loaded once, before timing (load times are listed apart).
Prints a markdown table: medians over `--runs` runs. The target: all stages together with the
default settings in at most 0.25 x the audio's duration.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

from extractors.acoustic_features import AcousticFeatureExtractor  # noqa: E402
from extractors.asr import AsrConfig, SpeechRecognizer  # noqa: E402
from extractors.audio import SAMPLE_RATE, load_audio  # noqa: E402
from extractors.diarization import SpeakerDiarizer  # noqa: E402
from extractors.text_features import TextEncoder  # noqa: E402
from extractors.vad import VoiceActivityDetector  # noqa: E402

TARGET_RTF = 0.25


def machine() -> str:
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU used"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{gpu}, Python {platform.python_version()}")


def timed(fn, runs: int):
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--no-variants", action="store_true", help="only the default settings")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory() as tmp:
        jfk = args.shared / "media" / "jfk.flac"
        call = args.shared / "data" / "pyannote_sample" / "sample.wav"
        both = Path(tmp) / "jfk+call.wav"
        soundfile.write(both, np.concatenate([load_audio(jfk), load_audio(call)]), SAMPLE_RATE)
        inputs = {"jfk.flac (11 s)": jfk, "pyannote sample.wav (30 s)": call, "jfk + sample (41 s)": both}

        loads: dict[str, float] = {}
        start = time.perf_counter()
        vad = VoiceActivityDetector()
        loads["VAD"] = time.perf_counter() - start
        start = time.perf_counter()
        asr = SpeechRecognizer(AsrConfig(), vad=vad)
        loads["ASR (faster-whisper tiny.en int8)"] = time.perf_counter() - start
        start = time.perf_counter()
        diarizer = SpeakerDiarizer(vad=vad)
        loads["diarization"] = time.perf_counter() - start
        acoustic = AcousticFeatureExtractor()
        start = time.perf_counter()
        text = TextEncoder()
        loads["text (MiniLM)"] = time.perf_counter() - start
        variants: dict[str, SpeechRecognizer] = {}
        if not args.no_variants:
            variants = {
                "ASR variant: tiny.en beam 5": SpeechRecognizer(AsrConfig(beam_size=5), vad=vad),
                "ASR variant: base (multilingual) beam 1": SpeechRecognizer(AsrConfig(model="whisper-base"), vad=vad),
                "ASR variant: openai-whisper tiny.en (PyTorch fp32)": SpeechRecognizer(
                    AsrConfig(backend="openai-whisper"), vad=vad),
            }

        # Warm-up: first calls compile (numba in librosa) and allocate.
        warm = load_audio(jfk)
        regions = vad(warm)
        asr.transcribe(warm, regions)
        diarizer(warm, speech_regions=regions)
        acoustic.frames(warm)
        text.sentence_embeddings(["warm up"])
        for recognizer in variants.values():
            recognizer.transcribe(warm, regions)

        rows: dict[str, dict[str, float]] = {}
        for label, path in inputs.items():
            duration = len(load_audio(path)) / SAMPLE_RATE
            out: dict[str, float] = {}
            out["decode (PyAV)"], audio = timed(lambda p=path: load_audio(p), args.runs)
            out["VAD (silero)"], regions = timed(lambda a=audio: vad(a), args.runs)
            out["ASR (faster-whisper tiny.en, int8, beam 1)"], segments = timed(
                lambda a=audio, r=regions: asr.transcribe(a, r), args.runs)
            out["diarization (resemblyzer + spectral)"], turns = timed(
                lambda a=audio, r=regions: diarizer(a, speech_regions=r), args.runs)

            def acoustic_stage(a=audio, t=turns):
                frames = acoustic.frames(a)
                return [acoustic.speaker_span(frames, t, turn.speaker, turn.start, turn.end) for turn in t]

            out["acoustic features (librosa, per turn)"], _ = timed(acoustic_stage, args.runs)
            out["text features (MiniLM tokens, per segment)"], _ = timed(
                lambda s=segments: [text.token_embeddings(seg.text) for seg in s], args.runs)
            total = sum(out.values())
            out["**all stages (defaults)**"] = total
            for name, recognizer in variants.items():
                out[name], _ = timed(lambda a=audio, r=regions, rec=recognizer: rec.transcribe(a, r), args.runs)
            rows[label] = {name: seconds / duration for name, seconds in out.items()}

    stages = list(next(iter(rows.values())))
    print(f"Machine: {machine()}")
    print(f"Medians over {args.runs} runs; real-time factor = compute seconds / audio seconds "
          f"(lower is faster; target for all stages: <= {TARGET_RTF}).\n")
    print("| stage | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{rows[label][stage]:.3f}" for label in rows) + " |")
    print("\nModel load times (s, once per process): "
          + ", ".join(f"{name} {seconds:.2f}" for name, seconds in loads.items()))
    met = all(r["**all stages (defaults)**"] <= TARGET_RTF for r in rows.values())
    print(f"\nTarget (all stages <= {TARGET_RTF} x duration) met on every input: {'yes' if met else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
