"""SRT and WebVTT: one cue per speech segment, saying who speaks.

SRT has no speaker markup, so each cue starts ``Name: ``; WebVTT carries the speaker as a voice span
``<v Name>`` on every cue, which players show and screen readers announce. Both drop blank lines inside
a transcript (a blank line ends a cue in both formats); WebVTT escapes ``&``, ``<`` and ``>`` (so a
``-->`` in the text cannot end the cue timing).
"""

from __future__ import annotations

import html
from datetime import timedelta
from pathlib import Path

from pipeline.export.common import Speakers, seconds, sorted_segments, text_lines, write_text


def write_srt(timeline: dict, path: Path, *, timeline_path: Path | None = None) -> Path:
    import srt

    speakers = Speakers(timeline)
    cues = []
    for index, segment in enumerate(sorted_segments(timeline), start=1):
        lines = text_lines(segment["text"]) or [""]
        lines[0] = f"{speakers.of_segment(segment).label}: {lines[0]}".rstrip()
        cues.append(srt.Subtitle(index, timedelta(seconds=seconds(segment["start"])),
                                 timedelta(seconds=seconds(segment["end"])), "\n".join(lines)))
    return write_text(path, srt.compose(cues, reindex=False))


def _timestamp(t: float) -> str:
    total = round(seconds(t) * 1000)
    hours, rest = divmod(total, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def write_vtt(timeline: dict, path: Path, *, timeline_path: Path | None = None) -> Path:
    from webvtt import Caption, WebVTT

    speakers = Speakers(timeline)
    captions = []
    for segment in sorted_segments(timeline):
        voice = html.escape(speakers.of_segment(segment).label, quote=False)
        lines = [html.escape(line, quote=False) for line in text_lines(segment["text"])] or [""]
        lines[0] = f"<v {voice}>{lines[0]}"
        captions.append(Caption(_timestamp(segment["start"]), _timestamp(segment["end"]), lines,
                                identifier=segment["id"]))
    return write_text(path, WebVTT(captions=captions).content)
