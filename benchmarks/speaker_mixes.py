"""Recordings with a known number of speakers, built from the shared material, for speaker counting.

Two sets:

- `SHARED_COMBINATIONS`: the 11 combinations of shared recordings that the diarization notes of
  issue 5 counted on ("right on 9 of 11"; they were never written down, so they are fixed here): each
  recording alone, and recordings concatenated with 0.5 s of silence between them. Voices: the
  pyannote call (2 speakers), jfk.flac (1), the VisualVoice interview (host and guest: 2), the two
  video-retalking talking heads (1 each, different people).
- `ravdess_mixes`: conversations of 1-5 RAVDESS actors (24 voices, odd ids male) taking turns, one
  utterance per turn, drawn with a seed; actors 1-12 and 13-24 form two disjoint pools so that
  numbers calibrated on one pool can be checked on the other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
GAP_S = 0.5  # silence between concatenated recordings

RECORDINGS = {  # name -> (path under shared/, number of speakers)
    "call": ("data/pyannote_sample/sample.wav", 2),
    "jfk": ("media/jfk.flac", 1),
    "interview": ("media/visualvoice_interview.mp4", 2),
    "face1": ("media/retalking_face1.mp4", 1),
    "face2": ("media/retalking_face2.mp4", 1),
}

SHARED_COMBINATIONS: dict[str, tuple[str, ...]] = {
    "jfk": ("jfk",),
    "call": ("call",),
    "interview": ("interview",),
    "face1": ("face1",),
    "face2": ("face2",),
    "face1+face2": ("face1", "face2"),
    "jfk+call": ("jfk", "call"),
    "jfk+interview": ("jfk", "interview"),
    "jfk+face1+face2": ("jfk", "face1", "face2"),
    "call+interview": ("call", "interview"),
    "all five": ("jfk", "call", "interview", "face1", "face2"),
}

CALIBRATION_ACTORS = tuple(range(1, 13))
HELD_OUT_ACTORS = tuple(range(13, 25))


@dataclass
class Mix:
    name: str
    audio: np.ndarray  # [samples] 16 kHz mono float32
    num_speakers: int

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def _concatenate(parts: list[np.ndarray], gap_s: float) -> np.ndarray:
    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    pieces: list[np.ndarray] = []
    for part in parts:
        pieces += [part.astype(np.float32), gap]
    return np.concatenate(pieces[:-1]) if pieces else np.zeros(0, np.float32)


def shared_combinations(shared_dir: Path) -> list[Mix]:
    """The 11 combinations, in `SHARED_COMBINATIONS` order."""
    from extractors.audio import load_audio

    audio = {name: load_audio(shared_dir / path) for name, (path, _) in RECORDINGS.items()}
    return [
        Mix(name, _concatenate([audio[p] for p in parts], GAP_S), sum(RECORDINGS[p][1] for p in parts))
        for name, parts in SHARED_COMBINATIONS.items()
    ]


def ravdess_mixes(shared_dir: Path, actors: tuple[int, ...], speaker_counts=(1, 2, 3, 4, 5),
                  trials: int = 4, turns_per_speaker: int = 3, seed: int = 0) -> list[Mix]:
    """Turn-taking conversations: `trials` per speaker count, each speaker `turns_per_speaker` utterances.

    Turns go round the speakers in a shuffled order each round, with 0.2-0.6 s of silence between
    (RAVDESS files already hold ~1 s of silence around each sentence); utterances are drawn across
    emotions, so one voice is heard neutral, happy, angry... as a speaker in a show would be.
    """
    from extractors.audio import load_audio

    rng = random.Random(seed)
    root = shared_dir / "data" / "ravdess_speech"
    mixes: list[Mix] = []
    for count in speaker_counts:
        for trial in range(trials):
            chosen = rng.sample(list(actors), count)
            files = {a: rng.sample(sorted((root / f"Actor_{a:02d}").glob("*.flac")), turns_per_speaker)
                     for a in chosen}
            parts: list[np.ndarray] = []
            for round_index in range(turns_per_speaker):
                order = chosen[:]
                rng.shuffle(order)
                for actor in order:
                    parts.append(load_audio(files[actor][round_index]))
                    parts.append(np.zeros(int(rng.uniform(0.2, 0.6) * SAMPLE_RATE), np.float32))
            name = f"{count} spk #{trial} (actors {','.join(map(str, sorted(chosen)))})"
            mixes.append(Mix(name, np.concatenate(parts[:-1]), count))
    return mixes
