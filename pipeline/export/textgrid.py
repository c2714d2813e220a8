"""Praat TextGrid (praatio): the tiers of pipeline.export.tiers as interval tiers.

Praat has no tier dependencies, so ``Name role``, ``Name emotion`` and ``Name confidence`` are plain
interval tiers over the same moments; the gaps between intervals are written as empty intervals (Praat
wants a tier to cover the whole time), which is why a moment without labels says ``-``. Labels lose
surrounding whitespace (praatio strips them; ASR text often starts with a space).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.export.common import writing
from pipeline.export.tiers import end_ms, speaker_tiers


def build_textgrid(timeline: dict):
    from praatio import textgrid
    from praatio.data_classes.interval_tier import IntervalTier

    end = end_ms(timeline) / 1000
    grid = textgrid.Textgrid(minTimestamp=0.0, maxTimestamp=end)

    def add(name: str, entries: list[tuple[float, float, str]]) -> None:
        grid.addTier(IntervalTier(name, entries, 0.0, end))

    for tiers in speaker_tiers(timeline):
        for lane, intervals in enumerate(tiers.speech):
            # praatio strips labels when it saves; stripping here says so
            add(tiers.speech_tier(lane), [(i.start_ms / 1000, i.end_ms / 1000, i.value.strip()) for i in intervals])
        for kind in ("role", "emotion", "confidence"):
            for lane, moments in enumerate(tiers.moments):
                add(tiers.moment_tier(kind, lane),
                    [(m.start_ms / 1000, m.end_ms / 1000, getattr(m, kind)) for m in moments])
    return grid


def write_textgrid(timeline: dict, path: Path, *, timeline_path: Path | None = None) -> Path:
    grid = build_textgrid(timeline)
    return writing(path, lambda temporary: grid.save(str(temporary), format="long_textgrid",
                                                      includeBlankSpaces=True, reportingMode="error"))
