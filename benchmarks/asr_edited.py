"""Speech recognition on edited audio: made-up words and word times outside speech.

    .venv/bin/python benchmarks/asr_edited.py [--utterances 40] [--shared ../shared]
        [--module OLD_ASR.py --module-label "before"] [--backend faster-whisper|openai-whisper]

Material, built from the shared recordings (nothing is written to disk):

- RAVDESS: `--utterances` acted single sentences ("Kids are talking by the door" / "Dogs are sitting
  by the door", both statements, actors and emotions spread), each in three edits: *trimmed* to its
  speech (+-0.1 s: clean 1.5-3 s utterances), *in silence* (5 s of silence before, 10 s after) and
  *pairs* (two utterances 30 s apart, one transcript).
- jfk.flac with 60 s of silence inserted into the pause after "Americans", and plain.
- the pyannote sample call (30 s, two speakers) against its STM transcript.

Per recogniser: the share of utterances with a word not in the sentence ("hallucination rate"),
word insertions, WER, and how far any word or segment reaches outside the speech regions (the
VAD's regions, which words may only leave by the recogniser's padding). `--module` loads another
version of extractors/asr.py (e.g. `git show <commit>:extractors/asr.py > /tmp/asr_old.py`) to
compare with; the table then has one block per version.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

from extractors.audio import SAMPLE_RATE, load_audio  # noqa: E402
from extractors.vad import SpeechRegion, VoiceActivityDetector  # noqa: E402

SENTENCES = {"01": "kids are talking by the door", "02": "dogs are sitting by the door"}
JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
JFK_PAUSE_S = 2.77  # inside the pause after "Americans" (VAD: speech 0.32-2.27 s, then 3.27 s)


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU used"
    return (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}, Python {platform.python_version()}")


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"asr_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def ravdess_files(root: Path, count: int) -> list[Path]:
    """`count` files, both statements alternating, one actor after another, emotions rotating."""
    chosen: list[Path] = []
    actors = sorted(p for p in root.iterdir() if p.is_dir())
    round_index = 0
    while len(chosen) < count and round_index < 30:
        for actor_index, actor in enumerate(actors):
            if len(chosen) >= count:
                break
            statement = "01" if (actor_index + round_index) % 2 == 0 else "02"
            files = sorted(f for f in actor.glob("*.flac") if f.name.split("-")[4] == statement)
            chosen.append(files[(actor_index * 7 + round_index * 13) % len(files)])
        round_index += 1
    return chosen


@dataclass
class Score:
    utterances: int = 0
    with_foreign_word: int = 0          # a word that is not in the sentence
    insertions: int = 0
    reference_words: int = 0
    errors: int = 0
    outside_s: float = 0.0              # furthest any word reaches outside the speech regions
    long_silence_segments: int = 0      # segments spanning a silence > 2 s
    examples: list[str] = field(default_factory=list)

    def add(self, reference: str, segments, regions: list[SpeechRegion], normalize) -> None:
        hypothesis = normalize(" ".join(s.text for s in segments))
        reference = normalize(reference)
        self.utterances += 1
        foreign = [w for w in hypothesis.split() if w not in set(reference.split())]
        if foreign:
            self.with_foreign_word += 1
            if len(self.examples) < 4:
                self.examples.append(" | ".join(s.text.strip() for s in segments))
        measures = jiwer.process_words(reference, hypothesis or "<empty>")
        self.insertions += measures.insertions
        self.errors += measures.substitutions + measures.deletions + measures.insertions
        self.reference_words += len(reference.split())
        for segment in segments:
            for word in segment.words:
                self.outside_s = max(self.outside_s, outside(word.start, word.end, regions))
            if longest_silence(segment.start, segment.end, regions) > 2.0:
                self.long_silence_segments += 1


def outside(start: float, end: float, regions: list[SpeechRegion]) -> float:
    """Seconds of [start, end] that lie outside every region."""
    inside = sum(max(0.0, min(end, r.end) - max(start, r.start)) for r in regions)
    return max(0.0, (end - start) - inside)


def longest_silence(start: float, end: float, regions: list[SpeechRegion]) -> float:
    longest, cursor = 0.0, start
    for region in regions:
        if region.end <= start or region.start >= end:
            continue
        longest = max(longest, region.start - cursor)
        cursor = max(cursor, region.end)
    return max(longest, end - cursor)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--backend", default="faster-whisper", choices=["faster-whisper", "openai-whisper"])
    parser.add_argument("--module", type=Path, help="another extractors/asr.py to compare with")
    parser.add_argument("--module-label", default="other version")
    parser.add_argument("--threads", type=int, default=0, help="torch/CTranslate2 threads (0: every core)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    from whisper.normalizers import EnglishTextNormalizer

    import extractors.asr as current

    normalize = EnglishTextNormalizer()
    vad = VoiceActivityDetector()
    versions = {"this version": current}
    if args.module is not None:
        versions = {args.module_label: load_module(args.module), **versions}

    # Material: (condition, reference, audio, speech regions of the audio).
    material: list[tuple[str, str, np.ndarray, list[SpeechRegion]]] = []
    trimmed: list[tuple[str, np.ndarray]] = []
    for path in ravdess_files(args.shared / "data" / "ravdess_speech", args.utterances):
        audio = load_audio(path)
        regions = vad(audio)
        if not regions:
            continue
        start, end = max(0.0, regions[0].start - 0.1), regions[-1].end + 0.1
        trimmed.append((SENTENCES[path.name.split("-")[4]], audio[int(start * SAMPLE_RATE): int(end * SAMPLE_RATE)]))
    for sentence, clip in trimmed:
        material.append(("RAVDESS trimmed", sentence, clip, vad(clip)))
        placed = np.concatenate([silence(5.0), clip, silence(10.0)])
        material.append(("RAVDESS in silence (5 s before, 10 s after)", sentence, placed, vad(placed)))
    for (first, a), (second, b) in zip(trimmed[::2], trimmed[1::2], strict=False):
        pair = np.concatenate([silence(1.0), a, silence(30.0), b, silence(2.0)])
        material.append(("RAVDESS pairs 30 s apart", f"{first} {second}", pair, vad(pair)))
    jfk = load_audio(args.shared / "media" / "jfk.flac")
    cut = int(JFK_PAUSE_S * SAMPLE_RATE)
    inserted = np.concatenate([jfk[:cut], silence(60.0), jfk[cut:]])
    material.append(("jfk.flac", JFK, jfk, vad(jfk)))
    material.append(("jfk.flac, 60 s of silence inserted", JFK, inserted, vad(inserted)))
    call_dir = args.shared / "data" / "pyannote_sample"
    call = load_audio(call_dir / "sample.wav")
    reference = " ".join(" ".join(line.split()[5:]) for line in (call_dir / "sample.stm").read_text().splitlines()
                         if line.strip())
    material.append(("pyannote sample call", reference, call, vad(call)))

    results: dict[str, dict[str, Score]] = {}
    seconds: dict[str, float] = {}
    for label, module in versions.items():
        config = module.AsrConfig(backend=args.backend, cpu_threads=args.threads)
        recognizer = module.SpeechRecognizer(config, vad=vad)
        recognizer.transcribe(jfk)  # warm-up
        scores: dict[str, Score] = {}
        started = time.perf_counter()
        for condition, sentence, audio, regions in material:
            segments = recognizer.transcribe(audio, regions)
            scores.setdefault(condition, Score()).add(sentence, segments, regions, normalize)
            print(f"{label}: {condition}: {' | '.join(s.text.strip() for s in segments)}", file=sys.stderr)
        seconds[label] = time.perf_counter() - started
        results[label] = scores

    print(f"Machine: {machine()}")
    print(f"Backend: {args.backend} tiny.en; {len(trimmed)} RAVDESS utterances; speech regions from silero VAD.\n")
    print("| version | material | n | with a word not said | insertions | WER | furthest word outside speech (s) "
          "| segments over a > 2 s silence |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, scores in results.items():
        for condition, score in scores.items():
            print(f"| {label} | {condition} | {score.utterances} | "
                  f"{score.with_foreign_word} ({score.with_foreign_word / score.utterances:.0%}) | "
                  f"{score.insertions} | {score.errors / max(score.reference_words, 1):.3f} | "
                  f"{score.outside_s:.2f} | {score.long_silence_segments} |")
    print()
    for label, scores in results.items():
        print(f"{label}: {seconds[label]:.0f} s for all material")
        for condition, score in scores.items():
            for example in score.examples:
                print(f"  - {label}, {condition}: {example!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
