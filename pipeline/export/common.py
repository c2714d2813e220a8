"""What every export shares: display names for who speaks, millisecond times, tiers without overlaps.

The timeline JSON is the lossless master; an export is a view of it in another tool's terms. The same
person must carry the same name in every format, so the names are decided here once per timeline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from extractors.io import write_atomically
from pipeline.errors import UserError

T = TypeVar("T")
OFF_SCREEN = "Off-screen"


def seconds(t: float) -> float:
    """A time rounded to the millisecond: every export states times to 1 ms."""
    return round(float(t), 3)


def milliseconds(t: float) -> int:
    return int(round(float(t) * 1000))


def single_line(text: str) -> str:
    """Whitespace runs (newlines included) as one space: names go where a line break would break a file."""
    return " ".join(str(text).split())


def text_lines(text: str) -> list[str]:
    """The text's non-blank lines, each stripped: subtitle formats end a cue at a blank line."""
    return [line.strip() for line in str(text).splitlines() if line.strip()]


@dataclass(frozen=True)
class Speaker:
    """Someone a tier or a subtitle prefix is about: a character, or an off-screen voice."""
    key: str                # character id, or "voice:<voice>" for speech no on-screen character was given
    label: str              # display name, unique within the timeline
    character: str | None   # character id (None: off screen)
    voice: str | None


class Speakers:
    """The display name of every character and off-screen voice of one timeline, unique within it.

    A character is its name, else its id; speech attributed to no character is ``Off-screen (SPK0)``
    after its diarization voice (``Off-screen`` when it has none). Two characters with the same name
    get their ids appended, so tiers and subtitle prefixes never merge different people.
    """

    def __init__(self, timeline: dict):
        self._by_key: dict[str, Speaker] = {}
        wanted: list[tuple[str, str, str | None, str | None]] = []
        for character in timeline["characters"]:
            name = single_line(character.get("name") or "") or character["id"]
            wanted.append((character["id"], name, character["id"], None))
        known = {c["id"] for c in timeline["characters"]}
        for segment in timeline["segments"]:
            character = segment["character"]
            if character is not None and character not in known:  # valid JSON, dangling reference
                known.add(character)
                wanted.append((character, character, character, None))
        voices = sorted({s["voice"] for s in timeline["segments"] if s["character"] is None},
                        key=lambda v: (v is None, v or ""))
        for voice in voices:
            label = f"{OFF_SCREEN} ({single_line(voice)})" if voice else OFF_SCREEN
            wanted.append((f"voice:{voice}", label, None, voice))
        counts: dict[str, int] = {}
        for _, label, _, _ in wanted:
            counts[label] = counts.get(label, 0) + 1
        for key, label, character, voice in wanted:
            if counts[label] > 1:
                label = f"{label} ({character or voice})"
            self._by_key[key] = Speaker(key, label, character, voice)

    def __iter__(self):
        return iter(self._by_key.values())

    def key_of(self, segment: dict) -> str:
        return segment["character"] if segment["character"] is not None else f"voice:{segment['voice']}"

    def of_segment(self, segment: dict) -> Speaker:
        return self._by_key[self.key_of(segment)]

    def of_character(self, character: str) -> Speaker:
        if character not in self._by_key:  # a timeline entry naming a character the list lacks
            self._by_key[character] = Speaker(character, character, character, None)
        return self._by_key[character]


def sorted_segments(timeline: dict) -> list[dict]:
    return sorted(timeline["segments"], key=lambda s: (s["start"], s["end"], s["id"]))


def lanes(items: Iterable[T], start: Callable[[T], float], end: Callable[[T], float]) -> list[list[T]]:
    """Items split into as few lanes as possible with no two overlapping in one lane (first fit by start).

    ELAN and Praat tiers cannot hold overlapping intervals, yet one character can have overlapping
    moments (two people talking at once make two moments over the same time): those go to a second tier.
    """
    result: list[list[T]] = []
    ends: list[float] = []
    for item in sorted(items, key=lambda i: (start(i), end(i))):
        for index, lane_end in enumerate(ends):
            if start(item) >= lane_end:
                result[index].append(item)
                ends[index] = end(item)
                break
        else:
            result.append([item])
            ends.append(end(item))
    return result


def lane_name(base: str, index: int) -> str:
    return base if index == 0 else f"{base} #{index + 1}"


def probabilities_text(probs: dict[str, float], labels: Sequence[str]) -> str:
    """``anger=0.4136; joy=0.7158; ...`` in the model's label order (then any others)."""
    order = [label for label in labels if label in probs] + [label for label in probs if label not in labels]
    return "; ".join(f"{label}={probs[label]:.4f}" for label in order)


def parse_probabilities(text: str) -> dict[str, float]:
    """Inverse of probabilities_text (for readers and tests)."""
    pairs = (item.rsplit("=", 1) for item in text.split("; ") if item)
    return {label: float(value) for label, value in pairs}


def file_token(text: str, fallback: str = "unknown") -> str:
    """One whitespace-free field (RTTM is split on whitespace)."""
    return re.sub(r"\s+", "_", str(text).strip()) or fallback


def media_path(timeline: dict, timeline_path: Path | None) -> Path:
    """The video the timeline was made from, as an absolute path: as recorded if it exists (absolute or
    relative to the working folder), else beside the timeline, else the recorded path made absolute."""
    recorded = Path(timeline["video"]["path"])
    if recorded.is_absolute():
        return recorded
    candidates = [Path.cwd() / recorded]
    if timeline_path is not None:
        candidates += [timeline_path.parent / recorded, timeline_path.parent / recorded.name]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    return candidates[0].absolute()


def write_text(path: Path, text: str) -> Path:
    """UTF-8 text, atomically (a reader sees the old file or the whole new one)."""
    return writing(path, lambda temporary: temporary.write_text(text, encoding="utf-8", newline="\n"))


def writing(path: Path, write: Callable[[Path], None]) -> Path:
    """``write_atomically`` with an unwritable target as a UserError (one line, exit 2)."""
    try:
        return write_atomically(path, write)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


def relative_url(target: Path, folder: Path) -> str:
    """``target`` relative to ``folder`` the way ELAN writes RELATIVE_MEDIA_URL (``./x.mp4``, ``../x.mp4``)."""
    relative = Path(os.path.relpath(target, folder.resolve())).as_posix()
    return relative if relative.startswith("../") else f"./{relative}"
