"""RTTM speaker turns by character, for diarization scoring (pyannote.metrics, dscore, md-eval).

One ``SPEAKER`` line per speech segment; the file id is the video's stem, the speaker the character's
display name (off-screen speech: its diarization voice, ``SPK0``). RTTM splits fields on whitespace, so
whitespace inside either becomes ``_``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.export.common import Speakers, file_token, seconds, sorted_segments, write_text


def speaker_token(speakers: Speakers, segment: dict) -> str:
    speaker = speakers.of_segment(segment)
    if speaker.character is None:
        return file_token(speaker.voice or "", fallback="unknown")
    return file_token(speaker.label)


def write_rttm(timeline: dict, path: Path, *, timeline_path: Path | None = None) -> Path:
    speakers = Speakers(timeline)
    uri = file_token(Path(timeline["video"]["path"]).stem, fallback="video")
    lines = []
    for segment in sorted_segments(timeline):
        start, end = seconds(segment["start"]), seconds(segment["end"])
        lines.append(f"SPEAKER {uri} 1 {start:.3f} {max(0.0, end - start):.3f} <NA> <NA> "
                     f"{speaker_token(speakers, segment)} <NA> <NA>\n")
    return write_text(path, "".join(lines))
