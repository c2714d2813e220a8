"""The annotation tiers ELAN and Praat exports share, laid out once from the timeline.

Per speaker (character or off-screen voice), in this order:
  ``Name``             speech: one interval per segment, the transcript;
  ``Name role``        one interval per timeline moment of a character, ``speaker`` or ``listener``;
  ``Name emotion``     the same moments, the labels over threshold (``joy, anger``; ``-`` for none);
  ``Name confidence``  the same moments, every label's probability (``anger=0.4136; joy=0.7158; ...``).
Overlapping intervals of one speaker (two people talking at once make overlapping moments) go to a
second tier of each kind (``Name #2``, ``Name role #2``, ...), since neither tool allows overlaps in a tier.
Intervals of zero length (neither tool can hold one) are left out with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipeline.export.common import Speakers, lane_name, lanes, milliseconds, probabilities_text

log = logging.getLogger(__name__)
NO_LABELS = "-"


@dataclass
class Interval:
    start_ms: int
    end_ms: int
    value: str


@dataclass
class MomentInterval:
    start_ms: int
    end_ms: int
    role: str
    emotion: str
    confidence: str


@dataclass
class SpeakerTiers:
    label: str
    speech: list[list[Interval]] = field(default_factory=list)        # lanes
    moments: list[list[MomentInterval]] = field(default_factory=list)  # lanes

    def speech_tier(self, lane: int) -> str:
        return lane_name(self.label, lane)

    def moment_tier(self, kind: str, lane: int) -> str:
        return lane_name(f"{self.label} {kind}", lane)


def _positive(start_ms: int, end_ms: int, what: str) -> bool:
    if end_ms > start_ms:
        return True
    log.warning("%s has no length at millisecond precision (%d ms to %d ms): left out", what, start_ms, end_ms)
    return False


def speaker_tiers(timeline: dict) -> list[SpeakerTiers]:
    """Every speaker's tiers; characters without any speech still get their (empty) speech tier."""
    speakers = Speakers(timeline)
    labels = timeline["model"]["labels"]
    speech: dict[str, list[Interval]] = {s.key: [] for s in speakers}
    for segment in timeline["segments"]:
        start, end = milliseconds(segment["start"]), milliseconds(segment["end"])
        if _positive(start, end, f"segment {segment['id']}"):
            speech.setdefault(speakers.key_of(segment), []).append(Interval(start, end, segment["text"]))
    moments: dict[str, list[MomentInterval]] = {}
    for entry in timeline["timeline"]:
        start, end = milliseconds(entry["start"]), milliseconds(entry["end"])
        if _positive(start, end, f"moment {entry['moment']} of {entry['character']}"):
            speakers.of_character(entry["character"])  # registers a character missing from the list
            moments.setdefault(entry["character"], []).append(MomentInterval(
                start, end, entry["role"], ", ".join(entry["labels"]) or NO_LABELS,
                probabilities_text(entry["probs"], labels)))
    result = []
    for speaker in speakers:
        tiers = SpeakerTiers(speaker.label)
        tiers.speech = lanes(speech.get(speaker.key, []), lambda i: i.start_ms, lambda i: i.end_ms) or [[]]
        tiers.moments = lanes(moments.get(speaker.key, []), lambda i: i.start_ms, lambda i: i.end_ms)
        result.append(tiers)
    return result


def end_ms(timeline: dict) -> int:
    """The end of the annotated time: the video's duration, or the last interval when that runs past it."""
    ends = [timeline["video"]["duration"]] + [s["end"] for s in timeline["segments"]]
    ends += [e["end"] for e in timeline["timeline"]]
    return max(milliseconds(t) for t in ends)
