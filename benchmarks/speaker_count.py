"""Speaker counting: the shared combinations, prefixes of the two-party call, RAVDESS mixes, DER.

    .venv/bin/python benchmarks/speaker_count.py [--shared ../shared] [--old-code FILE]

Tables (markdown):
1. the 11 combinations of shared recordings (benchmarks/speaker_mixes.py): true count, automatic
   count, with bounds min = true - 1, max = true + 1, with the prior `expected_speakers` = true
   count, and with a wrong prior (true + 1), plus the count of the code before issue 9 when
   `--old-code` names a copy of the old extractors/diarization.py (`git show 0817c28:extractors/diarization.py`);
2. prefixes of the pyannote call (its second voice first speaks at 7.55 s);
3. RAVDESS conversations: the calibration pool (actors 1-12) and the held-out pool (actors 13-24);
4. DER of the full call against sample.rttm (collar 0.25 s), old and new code.
Counting reuses one set of window embeddings per recording (count_speakers); DER runs diarize().
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model  # noqa: E402
from speaker_mixes import (  # noqa: E402
    CALIBRATION_ACTORS,
    HELD_OUT_ACTORS,
    Mix,
    ravdess_mixes,
    shared_combinations,
)

from extractors.audio import SAMPLE_RATE, load_audio  # noqa: E402
from extractors.diarization import SpeakerDiarizer, read_rttm  # noqa: E402


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU used"
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {gpu}, Python {platform.python_version()}"


def load_old(path: Path):
    spec = importlib.util.spec_from_file_location("old_diarization", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.SpeakerDiarizer(vad=None)


class Counter:
    def __init__(self, old):
        self.new = SpeakerDiarizer()
        self.old = old
        if old is not None:
            old._vad = self.new.vad

    def counts(self, mix: Mix) -> dict[str, int | str]:
        regions = self.new.vad(mix.audio)
        embeddings, ranges, reliable = self.new.embed_windows(mix.audio, regions)
        n = mix.num_speakers
        voting = reliable if reliable.sum() >= 2 else np.ones(len(embeddings), bool)
        e, r = embeddings[voting], ranges[voting]

        def count(**kwargs) -> int:
            return self.new.count_speakers(e, r, **kwargs) if len(e) else 0

        row: dict[str, int | str] = {"true": n, "auto": count(),
                                     "min/max": count(min_speakers=max(1, n - 1), max_speakers=n + 1),
                                     "prior=true": count(expected_speakers=n),
                                     "prior=true+1": count(expected_speakers=n + 1)}
        if self.old is not None:
            old_embeddings, _ = self.old.embed_windows(mix.audio, regions)
            row["old auto"] = self.old.count_speakers(old_embeddings) if len(old_embeddings) else 0
        return row


def table(rows: list[tuple[str, dict]], title: str) -> None:
    columns = list(rows[0][1])
    print(f"\n### {title}\n")
    print("| recording | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, row in rows:
        print(f"| {name} | " + " | ".join(str(row[c]) for c in columns) + " |")
    for column in columns[1:]:
        right = sum(row[column] == row["true"] for _, row in rows)
        print(f"\n{column}: right on {right} of {len(rows)}", end="")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--old-code", type=Path, help="a copy of the old extractors/diarization.py")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print(f"Machine: {machine()}")
    counter = Counter(load_old(args.old_code) if args.old_code else None)

    table([(m.name, counter.counts(m)) for m in shared_combinations(args.shared)],
          "11 combinations of shared recordings")
    call_path = args.shared / "data" / "pyannote_sample" / "sample.wav"
    call = load_audio(call_path)
    prefixes = [Mix(f"first {s} s", call[: s * SAMPLE_RATE], 2) for s in range(8, 31, 2)]
    table([(m.name, counter.counts(m)) for m in prefixes], "prefixes of the two-party call")
    table([(m.name, counter.counts(m)) for m in ravdess_mixes(args.shared, CALIBRATION_ACTORS, seed=0)],
          "RAVDESS mixes, calibration actors 1-12")
    table([(m.name, counter.counts(m)) for m in ravdess_mixes(args.shared, HELD_OUT_ACTORS, seed=1)],
          "RAVDESS mixes, held-out actors 13-24 (not used to choose any number)")

    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns) -> Annotation:
        result = Annotation()
        for turn in turns:
            result[Segment(turn.start, turn.end)] = turn.speaker
        return result

    reference = annotation(read_rttm(call_path.with_suffix(".rttm")))
    print("\n### DER on the pyannote sample (collar 0.25 s)\n")
    print("| code | automatic count | DER auto | DER num_speakers=2 |\n|---|---:|---:|---:|")
    for label, diarizer in (("before (old)", counter.old), ("after", counter.new)):
        if diarizer is None:
            continue
        auto = diarizer(call)
        der_auto = DiarizationErrorRate(collar=0.25)(reference, annotation(auto))
        der_two = DiarizationErrorRate(collar=0.25)(reference, annotation(diarizer(call, num_speakers=2)))
        print(f"| {label} | {len({t.speaker for t in auto})} | {der_auto:.3f} | {der_two:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
