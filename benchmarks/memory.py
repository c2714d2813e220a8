"""Peak memory (RSS) of each extractor stage on 1, 10 and 60 minutes of real footage.

    .venv/bin/python benchmarks/memory.py [--minutes 1 10 60] [--stages audio-load vad asr ...]
        [--shared ../shared] [--workdir /tmp/ramer-memory] [--out benchmarks/results/memory.md]

Inputs (`--input`, see benchmarks/long_input.py): `montage` (default), pieces of the shared clips
re-encoded once to 1280x720 and joined by stream copy in a shuffled order, so faces, voices and sentences
change at every cut; or `repeat`, `visualvoice_interview.mp4` repeated end to end by stream copy. Both are
written into `--workdir` (never the repository). Every (stage, length) runs in a fresh subprocess, which reports its own peak resident set
size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) after running the stage, so imports, models and the
stage's own input (the decoded audio for the audio stages) are counted, as they would be in a pipeline
process. Stages: audio load; VAD; ASR (VAD + faster-whisper tiny.en); diarization (VAD + resemblyzer);
acoustic features (decode + 47-d librosa frames, or `acoustic-whisper`: the default checkpoint's 384-d whisper states, + per-turn spans over 5 s turns); text features (MiniLM token
embeddings of one transcript sentence per 4 s, no audio); visual pass (`extract_visual`). The target:
peak memory flat in the length, under 2.5 GB at 60 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

STAGES = ("audio-load", "vad", "asr", "diarization", "acoustic", "acoustic-whisper", "text", "visual")
TARGET_GB = 2.5
SENTENCE = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")


def build_input(media_dir: Path, minutes: float, workdir: Path, kind: str = "montage") -> Path:
    """The benchmark input of ``minutes`` minutes (benchmarks/long_input.py)."""
    from long_input import build_long_input

    return build_long_input(media_dir, minutes, workdir, kind)


def run_stage(stage: str, path: Path) -> dict:
    """Runs one stage in this process; returns what it produced, for the table."""
    import numpy as np
    import torch

    torch.set_num_threads(1)   # the stages' own defaults on a shared 2-core machine; memory does not depend on it
    if stage == "text":
        from extractors.audio import load_audio  # noqa: F401  (same imports as the other stages)
        from extractors.media import probe
        from extractors.text_features import TextEncoder

        encoder = TextEncoder()
        sentences = int(probe(path).duration // 4)
        rows = sum(len(encoder.token_embeddings(SENTENCE)) for _ in range(sentences))
        return {"output": f"{sentences} sentences, {rows} tokens"}
    if stage == "visual":
        from extractors.visual_features import extract_visual

        result = extract_visual(path)
        return {"output": f"{result.frames_analysed} frames, {len(result.tracks)} tracks, "
                          f"{len(result.characters)} characters"}
    from extractors.audio import load_audio

    audio = load_audio(path)
    if stage == "audio-load":
        return {"output": f"{len(audio) / 16000:.0f} s of audio, {audio.nbytes / 1e6:.0f} MB"}
    if stage in ("acoustic", "acoustic-whisper"):
        from extractors.acoustic_features import (
            DEFAULT_WHISPER_BLOCKS,
            AcousticFeatureExtractor,
            WhisperEncoderFeatures,
        )
        from extractors.contracts import SpeakerTurn

        extractor = (AcousticFeatureExtractor() if stage == "acoustic"
                     else WhisperEncoderFeatures(blocks=DEFAULT_WHISPER_BLOCKS, device="cpu"))
        frames = extractor.frames(audio)
        seconds = len(audio) / 16000
        turns = [SpeakerTurn(t, min(seconds, t + 5.0), f"SPK{int(t // 5) % 2}") for t in np.arange(0, seconds, 5.0)]
        spans = sum(len(extractor.speaker_span(frames, turns, turn.speaker, turn.start, turn.end)) for turn in turns)
        return {"output": f"{frames.shape[0]} frames x {frames.shape[1]}, {spans} rows in {len(turns)} turns"}
    from extractors.vad import VoiceActivityDetector

    vad = VoiceActivityDetector()
    regions = vad(audio)
    if stage == "vad":
        return {"output": f"{len(regions)} speech regions"}
    if stage == "asr":
        from extractors.asr import AsrConfig, SpeechRecognizer

        segments = SpeechRecognizer(AsrConfig(), vad=vad).transcribe(audio, regions)
        return {"output": f"{len(segments)} segments, {sum(len(s.words) for s in segments)} words"}
    if stage == "diarization":
        from extractors.diarization import SpeakerDiarizer

        turns = SpeakerDiarizer(vad=vad)(audio, speech_regions=regions)
        return {"output": f"{len(turns)} turns, {len({t.speaker for t in turns})} speakers"}
    raise ValueError(f"unknown stage {stage!r}")


def child(stage: str, path: Path) -> int:
    start = time.perf_counter()
    result = run_stage(stage, path)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux
    print(json.dumps({**result, "peak_mb": peak_kb / 1024, "seconds": time.perf_counter() - start}))
    return 0


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return (f"{cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, no GPU used, Python "
            f"{platform.python_version()}; 1-minute load average at start {load:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ramer-memory"))
    parser.add_argument("--input", choices=("montage", "repeat"), default="montage")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[0], Path(args.child[1]))

    print(f"Machine: {machine()}")
    inputs = {m: build_input(args.shared / "media", m, args.workdir, args.input) for m in args.minutes}
    rows: dict[str, dict[float, dict]] = {stage: {} for stage in args.stages}
    for stage in args.stages:
        for minutes, path in inputs.items():
            done = subprocess.run([sys.executable, __file__, "--child", stage, str(path)],
                                  capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if done.returncode != 0:
                rows[stage][minutes] = {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                rows[stage][minutes] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {stage} {minutes:g} min: {rows[stage][minutes]}", file=sys.stderr, flush=True)

    lengths = list(inputs)
    print(f"\nPeak RSS (MB) of a fresh process running the stage on the `{args.input}` input of each length "
          f"(target: flat in length, < {TARGET_GB} GB at 60 min); wall seconds in brackets.\n")
    print("| stage | " + " | ".join(f"{m:g} min" for m in lengths) + " | output at the longest |")
    print("|---|" + "---:|" * len(lengths) + "---|")
    for stage, by_length in rows.items():
        cells = []
        for m in lengths:
            cell = by_length.get(m, {})
            cells.append(f"error: {cell['error']}" if "error" in cell else f"{cell['peak_mb']:.0f} ({cell['seconds']:.0f} s)")
        last = by_length[lengths[-1]]
        print(f"| {stage} | " + " | ".join(cells) + f" | {last.get('output', '-')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
