"""Moments, the unit the model scores, and the modality inputs of every character in them.

A :class:`Moment` is one speech segment (already split at speaker turns), or a window over a stretch
without speech, so listeners get a timeline too. Every character on screen during a moment is scored in
it, together (RAMer's inter-personal attention sees the scene). Per (moment, character),
:class:`ModalityInputs` holds the visual sequence, and acoustic and text sequences only for the character
who speaks; for everyone else they are EMPTY ``(0, D)`` arrays with ``present`` False, never zeros
pretending to be data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from extractors.contracts import SpeechSegment, Word

MODALITIES = ("text", "visual", "acoustic")  # the order of RAMer's ``present`` flags


@dataclass
class MomentConfig:
    split_pause_s: float = 0.5       # a pause this long between two words starts a new segment (and moment)
    listen_window_s: float = 3.0     # windows over stretches without speech
    min_window_s: float = 1.0        # a silent stretch shorter than this gets no window of its own
    min_segment_s: float = 0.2       # shorter speech segments are scored with at least this much video
    max_visual_steps: int = 64       # sequences longer than this are average-pooled in time
    max_acoustic_steps: int = 500
    max_text_steps: int = 256


@dataclass
class Moment:
    id: str                    # "M0", "M1", ...
    start: float
    end: float
    segment: str | None        # the speech segment, None for a window without speech
    speaker: str | None        # the character talking in it (None: nobody on screen, or no speech)

    def serialize(self) -> dict:
        return {"id": self.id, "start": self.start, "end": self.end, "segment": self.segment,
                "speaker": self.speaker}

    @classmethod
    def from_dict(cls, data: dict) -> Moment:
        return cls(**data)


@dataclass
class ModalityInputs:
    """One (moment, character): feature sequences, empty where the modality is absent."""

    moment: str
    character: str
    role: str                  # "speaker" or "listener"
    text: np.ndarray           # [Tt, Dt], Tt = 0 when the character says nothing
    visual: np.ndarray         # [Tv, Dv]
    acoustic: np.ndarray       # [Ta, Da], Ta = 0 when the character says nothing
    personality: np.ndarray | None = None  # [Dp] from the cast file; None: absent (never invented)

    @property
    def present(self) -> tuple[bool, bool, bool]:
        return tuple(getattr(self, m).shape[0] > 0 for m in MODALITIES)

    @property
    def modalities(self) -> list[str]:
        return [m for m, flag in zip(MODALITIES, self.present, strict=True) if flag]


def split_at_pauses(segments: list[SpeechSegment], min_pause_s: float, regions: list | None = None
                    ) -> list[SpeechSegment]:
    """Segments cut at pauses; ids renumbered.

    A pause is two consecutive words ``min_pause_s`` or more apart, or a silence of that length between
    two voice-activity regions lying within the two words (Whisper's word times often run into the
    silence, the VAD's do not). Whisper's segments can run over a pause in which the speaker changes; when
    diarization cannot tell the voices apart (similar voices, one cluster) the pause is still where the
    turn ends.
    """
    silences = []
    ordered = sorted(regions or [], key=lambda r: r.start)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.start - a.end >= min_pause_s:
            silences.append((a.end, b.start))

    def pause_between(first: Word, second: Word) -> bool:
        if second.start - first.end >= min_pause_s:
            return True
        return any(first.start <= g0 and g1 <= second.end for g0, g1 in silences)

    out: list[SpeechSegment] = []

    def emit(template: SpeechSegment, words: list[Word]) -> None:
        out.append(SpeechSegment(id=f"S{len(out)}", start=words[0].start, end=words[-1].end,
                                 text=" ".join(w.text.strip() for w in words), words=words, turn=template.turn,
                                 character=template.character, speaker_confidence=template.speaker_confidence,
                                 language=template.language))

    for segment in segments:
        if len(segment.words) < 2:
            out.append(SpeechSegment(**{**segment.__dict__, "id": f"S{len(out)}"}))
            continue
        run = [segment.words[0]]
        for word in segment.words[1:]:
            if pause_between(run[-1], word):
                emit(segment, run)
                run = []
            run.append(word)
        emit(segment, run)
    return out


def build_moments(segments: list[SpeechSegment], duration: float, speaker_of: dict[str, str | None],
                  config: MomentConfig | None = None) -> list[Moment]:
    """Every speech segment, plus windows tiling the stretches without speech, in time order."""
    config = config or MomentConfig()
    spans: list[tuple[float, float, str | None]] = []
    for segment in sorted(segments, key=lambda s: s.start):
        start, end = segment.start, max(segment.end, segment.start + config.min_segment_s)
        spans.append((max(0.0, start), min(duration, end) if duration > 0 else end, segment.id))
    # Silent stretches: the complement of the speech segments in [0, duration].
    silent, cursor = [], 0.0
    for start, end, _ in spans:
        if start > cursor:
            silent.append((cursor, start))
        cursor = max(cursor, end)
    if duration > cursor:
        silent.append((cursor, duration))
    for start, end in silent:
        length = end - start
        if length < config.min_window_s:
            continue
        count = max(1, int(round(length / config.listen_window_s)))
        step = length / count
        spans.extend((start + i * step, start + (i + 1) * step, None) for i in range(count))
    spans.sort(key=lambda s: (s[0], s[1]))
    return [Moment(f"M{i}", float(a), float(b), seg, speaker_of.get(seg) if seg else None)
            for i, (a, b, seg) in enumerate(spans)]


def pool_frames(x: np.ndarray, group: int) -> np.ndarray:
    """[T, D] -> [ceil(T / group), D]: the mean of each run of ``group`` frames (the last run may be shorter).

    A checkpoint trained on pooled frames (its card's ``acoustic_pool_frames``) must be fed the same.
    """
    if group <= 1 or not len(x):
        return x
    starts = np.arange(0, len(x), group)
    return (np.add.reduceat(x, starts, axis=0) / np.diff(np.append(starts, len(x)))[:, None]).astype(np.float32)


def pool_time(x: np.ndarray, max_steps: int) -> np.ndarray:
    """Average-pools ``x`` [T, D] in time by the smallest integer factor giving at most ``max_steps`` rows."""
    if len(x) <= max_steps or max_steps <= 0:
        return x
    factor = math.ceil(len(x) / max_steps)
    steps = math.ceil(len(x) / factor)
    padded = np.concatenate([x, np.repeat(x[-1:], steps * factor - len(x), axis=0)])
    return padded.reshape(steps, factor, x.shape[1]).mean(axis=1).astype(x.dtype)
