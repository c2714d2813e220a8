"""A labelled corpus in the MELD layout: one CSV row per utterance, checked row by row.

Columns (names as MELD spells them; case and ``_``/space differences are forgiven):

    Dialogue_ID, Utterance_ID   the utterance's identity (and, by default, its video file name)
    Speaker                     who says it (must not be empty)
    Emotion                     one label or several (``joy;surprise``, ``joy,surprise``, ``joy|surprise``)
    StartTime, EndTime          ``HH:MM:SS,mmm`` (MELD), ``HH:MM:SS.mmm``, ``MM:SS.mmm`` or plain seconds
    Season, Episode             optional, kept for the record
    Utterance                   optional transcript; without it the words come from the speech recogniser

Each row maps to a video file by a column (``--video-column``) or a file-name rule over the columns
(``--video-pattern``, MELD's own ``dia{Dialogue_ID}_utt{Utterance_ID}.mp4`` by default). Which part of the
file is the utterance depends on :class:`SpanMode`: MELD's clips are cut to the utterance already (their
times are the episode's), a video column usually points into a longer recording (the times are the
file's). A row that cannot be used is a :class:`BadRow` with its line number in the CSV, never an
exception: the caller decides whether to skip it or reject the corpus.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pipeline.errors import UserError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("Dialogue_ID", "Utterance_ID", "Speaker", "Emotion", "StartTime", "EndTime")
OPTIONAL_COLUMNS = ("Season", "Episode", "Utterance")
MELD_PATTERN = "dia{Dialogue_ID}_utt{Utterance_ID}.mp4"
LABEL_SEPARATORS = re.compile(r"[;,|+]")
# Other corpora's names for the seven labels (IEMOCAP abbreviations, FER2013 and RAVDESS words). RAVDESS
# "calm" is neutral, as in the default model's training. Anything else needs --labels NAME=LABEL.
LABEL_ALIASES: dict[str, str] = {
    "happy": "joy", "happiness": "joy", "joyful": "joy", "hap": "joy",
    "sad": "sadness", "sadness": "sadness",
    "angry": "anger", "ang": "anger",
    "disgusted": "disgust", "dis": "disgust",
    "fearful": "fear", "scared": "fear", "afraid": "fear", "fea": "fear",
    "surprised": "surprise", "sur": "surprise",
    "calm": "neutral", "neu": "neutral",
}
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d+)?)$")


class SpanMode(StrEnum):
    """Which part of a row's video file is the utterance."""

    AUTO = "auto"              # WHOLE_FILE with a file-name rule (MELD's clips), VIDEO with a video column
    VIDEO = "video"            # StartTime/EndTime are seconds in the video file: that span
    WHOLE_FILE = "whole-file"  # the file is the utterance; the times (the source episode's) are only checked


@dataclass(frozen=True)
class BadRow:
    line: int       # line of the CSV where the row starts (the header is line 1)
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class AnnotationRow:
    line: int
    dialogue: str
    utterance: str
    speaker: str
    labels: tuple[str, ...]        # names from the checkpoint's label set
    start: float                   # seconds, as written in the CSV
    end: float
    video: Path
    text: str | None = None        # the Utterance column; None: the speech recogniser's words
    season: str | None = None
    episode: str | None = None
    whole_file: bool = False       # the span is the whole file (start/end are the source episode's)

    @property
    def id(self) -> str:
        return f"dia{self.dialogue}_utt{self.utterance}"


@dataclass
class Annotations:
    path: Path
    rows: list[AnnotationRow]
    bad: list[BadRow]

    @property
    def total(self) -> int:
        return len(self.rows) + len(self.bad)


# ------------------------------------------------------------------------------------------ fields


def parse_time(value: str) -> float:
    """Seconds from ``HH:MM:SS,mmm`` / ``HH:MM:SS.mmm`` / ``MM:SS.mmm`` or a plain number of seconds."""
    text = value.strip()
    if not text:
        raise ValueError("empty")
    match = _CLOCK.match(text)
    if match:
        hours, minutes, seconds = match.groups()
        if int(minutes) >= 60 or float(seconds.replace(",", ".")) >= 60:
            raise ValueError(f"{text!r} is not a clock time")
        result = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds.replace(",", "."))
    else:
        try:
            result = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither HH:MM:SS,mmm nor seconds") from None
    if not math.isfinite(result) or result < 0:
        raise ValueError(f"{text!r} is not a time")
    return result


class LabelMap:
    """Maps a corpus's label words onto a checkpoint's label names (the names themselves, aliases, extras)."""

    def __init__(self, label_names: Sequence[str], extra: Mapping[str, str] | None = None):
        self.label_names = tuple(label_names)
        known = set(self.label_names)
        self.aliases = {name.lower(): name for name in self.label_names}
        self.aliases.update({k: v for k, v in LABEL_ALIASES.items() if v in known and k not in self.aliases})
        for word, target in (extra or {}).items():
            if target not in known:
                raise UserError(f"--labels {word}={target}: {target!r} is not a label of the checkpoint "
                                f"({', '.join(self.label_names)})")
            self.aliases[word.strip().lower()] = target

    @classmethod
    def from_arguments(cls, label_names: Sequence[str], pairs: Iterable[str] | None) -> LabelMap:
        extra = {}
        for pair in pairs or ():
            word, sep, target = pair.partition("=")
            if not sep or not word.strip() or not target.strip():
                raise UserError(f"--labels takes NAME=LABEL pairs (e.g. excited=joy), got {pair!r}")
            extra[word.strip()] = target.strip()
        return cls(label_names, extra)

    def parse(self, value: str) -> tuple[str, ...]:
        """The labels of one Emotion cell, in the checkpoint's order; ValueError names unknown words."""
        words = [w.strip().lower() for w in LABEL_SEPARATORS.split(value) if w.strip()]
        if not words:
            raise ValueError("no emotion label")
        unknown = [w for w in words if w not in self.aliases]
        if unknown:
            raise ValueError(f"unknown emotion label {', '.join(map(repr, unknown))} (known: "
                             f"{', '.join(self.label_names)} and aliases such as happy, sad, angry; "
                             "map others with --labels NAME=LABEL)")
        chosen = {self.aliases[w] for w in words}
        return tuple(name for name in self.label_names if name in chosen)


# ------------------------------------------------------------------------------------------ files


@dataclass(frozen=True)
class VideoRule:
    """How a row finds its video: a column holding a file name, or a pattern over the columns."""

    folder: Path
    column: str | None = None
    pattern: str = MELD_PATTERN
    span: SpanMode = SpanMode.AUTO

    @property
    def whole_file(self) -> bool:
        if self.span is SpanMode.AUTO:
            return self.column is None
        return self.span is SpanMode.WHOLE_FILE

    def pattern_fields(self) -> list[str]:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(self.pattern) if name is not None]
        except ValueError as error:
            raise UserError(f"--video-pattern {self.pattern!r} is not a valid pattern: {error}") from None
        if any(not name or not name.isidentifier() for name in fields):
            raise UserError(f"--video-pattern {self.pattern!r}: each {{...}} must name a column, "
                            "e.g. dia{Dialogue_ID}_utt{Utterance_ID}.mp4")
        return fields

    def path(self, row: Mapping[str, str]) -> Path:
        """The video of one row (ValueError: a field the rule needs is empty)."""
        if self.column is not None:
            name = (row.get(self.column) or "").strip()
            if not name:
                raise ValueError(f"empty {self.column}")
        else:
            values = {f: (row.get(f) or "").strip() for f in self.pattern_fields()}
            empty = [f for f, v in values.items() if not v]
            if empty:
                raise ValueError(f"empty {', '.join(empty)} (needed by the file name rule)")
            name = self.pattern.format(**values)
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.folder / path


# ------------------------------------------------------------------------------------------ reader


def _header_map(header: Sequence[str], wanted: Iterable[str]) -> dict[str, str]:
    """Our column name -> the CSV's spelling (exact, else ignoring case, spaces and underscores)."""
    def squash(name: str) -> str:
        return re.sub(r"[\s_]+", "", name).lower()

    by_squash = {}
    for name in header:
        by_squash.setdefault(squash(name), name)
    found = {}
    for name in wanted:
        if name in header:
            found[name] = name
        elif squash(name) in by_squash:
            found[name] = by_squash[squash(name)]
    return found


def _records(path: Path) -> Iterable[tuple[int, list[str], list[str]]]:
    """(line where the record starts, header, values) for every non-empty record."""
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except OSError as error:
        raise UserError(f"cannot read the annotations {path}: {error.strerror or error}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise UserError(f"{path} is empty; it needs a header row ({', '.join(REQUIRED_COLUMNS)})")
            header = [h.strip() for h in header]
            previous = reader.line_num
            for values in reader:
                start, previous = previous + 1, reader.line_num
                if any(v.strip() for v in values):
                    yield start, header, values
        except UnicodeDecodeError as error:
            raise UserError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") \
                from None
        except csv.Error as error:
            raise UserError(f"{path} line {reader.line_num}: not valid CSV ({error})") from None


def read_annotations(path: str | Path, labels: LabelMap, rule: VideoRule, check_files: bool = True) -> Annotations:
    """Every row of ``path`` as an :class:`AnnotationRow` or a :class:`BadRow` (missing file, unparsable or
    reversed times, unknown label, empty speaker, duplicate utterance); the file itself must be a MELD-layout
    CSV (UserError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"annotations file not found: {path}")
    if not rule.folder.is_dir():
        raise UserError(f"--videos {rule.folder} is not a folder")
    rows: list[AnnotationRow] = []
    bad: list[BadRow] = []
    seen: dict[tuple[str, str], int] = {}
    columns: dict[str, str] | None = None
    for line, header, values in _records(path):
        if columns is None:
            columns = _check_header(path, header, rule)
        record = dict(zip(header, values, strict=False))
        if len(values) > len(header):
            bad.append(BadRow(line, f"{len(values)} fields, the header has {len(header)}"))
            continue
        problem, row = _row(line, record, columns, labels, rule, check_files)
        if problem is None:
            key = (row.dialogue, row.utterance)
            if key in seen:
                problem = f"Dialogue_ID {row.dialogue} / Utterance_ID {row.utterance} already on line {seen[key]}"
            else:
                seen[key] = line
        if problem is not None:
            bad.append(BadRow(line, problem))
        else:
            rows.append(row)
    if columns is None:
        raise UserError(f"{path} has a header but no rows")
    return Annotations(path, rows, bad)


def _check_header(path: Path, header: Sequence[str], rule: VideoRule) -> dict[str, str]:
    columns = _header_map(header, (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; a MELD-layout corpus has "
                        f"{', '.join(REQUIRED_COLUMNS)} (and optionally {', '.join(OPTIONAL_COLUMNS)})")
    if rule.column is not None and rule.column not in header:
        raise UserError(f"{path}: no column {rule.column!r} (--video-column); the columns are {', '.join(header)}")
    if rule.column is None:
        unknown = [f for f in rule.pattern_fields() if f not in header and f not in columns]
        if unknown:
            raise UserError(f"--video-pattern {rule.pattern!r} names {', '.join(unknown)}, not columns of {path}")
    return columns


def _row(line: int, record: dict[str, str], columns: dict[str, str], labels: LabelMap, rule: VideoRule,
         check_files: bool) -> tuple[str | None, AnnotationRow | None]:
    """(None, row) for a usable row, else (the reason, None)."""
    def cell(name: str) -> str:
        return (record.get(columns[name]) or "").strip() if name in columns else ""

    dialogue, utterance, speaker = cell("Dialogue_ID"), cell("Utterance_ID"), cell("Speaker")
    for name, value in (("Dialogue_ID", dialogue), ("Utterance_ID", utterance)):
        if not value:
            return f"empty {name}", None
    if not speaker:
        return "empty Speaker", None
    try:
        row_labels = labels.parse(cell("Emotion"))
    except ValueError as error:
        return str(error), None
    times = {}
    for name in ("StartTime", "EndTime"):
        try:
            times[name] = parse_time(cell(name))
        except ValueError as error:
            return f"{name} {cell(name)!r} cannot be read ({error})", None
    if times["EndTime"] <= times["StartTime"]:
        return f"EndTime {cell('EndTime')} is not after StartTime {cell('StartTime')}", None
    # the rule may name columns by the CSV's spelling or by ours
    fields = {**record, **{ours: record.get(theirs, "") for ours, theirs in columns.items()}}
    try:
        video = rule.path(fields)
    except ValueError as error:
        return str(error), None
    if check_files and not video.is_file():
        return f"video file not found: {video}", None
    return None, AnnotationRow(
        line=line, dialogue=dialogue, utterance=utterance, speaker=speaker, labels=row_labels,
        start=times["StartTime"], end=times["EndTime"], video=video, text=cell("Utterance") or None,
        season=cell("Season") or None, episode=cell("Episode") or None, whole_file=rule.whole_file)


def check_spans(annotations: Annotations) -> None:
    """Moves rows whose span the video cannot hold (or whose video cannot be opened) to the bad rows.

    Only the container header is read (fast); a span must end within the video (a 0.1 s tolerance for
    rounded times), and it is checked against the duration in VIDEO mode only.
    """
    from extractors.errors import MediaError
    from extractors.media import probe

    durations: dict[Path, float | str] = {}
    keep = []
    for row in annotations.rows:
        if row.video not in durations:
            try:
                durations[row.video] = probe(row.video).duration
            except MediaError as error:
                durations[row.video] = f"video cannot be read: {error}"
        duration = durations[row.video]
        if isinstance(duration, str):
            annotations.bad.append(BadRow(row.line, duration))
        elif not row.whole_file and row.end > duration + 0.1:
            annotations.bad.append(BadRow(row.line, f"EndTime {row.end:.3f} s is past the end of {row.video.name} "
                                                    f"({duration:.3f} s)"))
        else:
            keep.append(row)
    annotations.rows = keep
    annotations.bad.sort(key=lambda b: b.line)


def describe_bad_rows(annotations: Annotations, limit: int = 10) -> str:
    """One line naming the bad rows (the first ``limit`` with their reasons)."""
    shown = "; ".join(str(b) for b in annotations.bad[:limit])
    more = f"; and {len(annotations.bad) - limit} more" if len(annotations.bad) > limit else ""
    return f"{annotations.path}: {len(annotations.bad)} of {annotations.total} rows unusable ({shown}{more})"


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``train`` and ``evaluate`` on a labelled corpus (``--annotations`` itself is
    added by the command, beside ``--dataset``)."""
    corpus = parser.add_argument_group("labelled videos (with --annotations)")
    corpus.add_argument("--videos", type=Path, metavar="DIR", help="folder the rows' video files are in")
    where = corpus.add_mutually_exclusive_group()
    where.add_argument("--video-column", metavar="COL", help="column holding each row's video file (relative to "
                                                             "--videos, or absolute)")
    where.add_argument("--video-pattern", metavar="PATTERN", default=None,
                       help=f"file name rule over the columns (default MELD's {MELD_PATTERN})")
    corpus.add_argument("--span", choices=[m.value for m in SpanMode], default=SpanMode.AUTO.value,
                        help="video: StartTime/EndTime are seconds in the file; whole-file: each file is the "
                             "utterance (MELD's clips, whose times are the episode's); auto (default): whole-file "
                             "with a file name rule, video with --video-column")
    corpus.add_argument("--on-bad-rows", choices=("skip", "reject"), default="skip",
                        help="skip (default) the rows that cannot be used, or reject the run (exit 2, nothing written)")
    corpus.add_argument("--labels", nargs="+", metavar="NAME=LABEL", default=None,
                        help="extra label words, e.g. excited=joy frustrated=anger (happy, sad, angry, ... are known)")
    corpus.add_argument("--features", type=Path, metavar="DIR", default=None,
                        help="feature cache (default $RAMER_CACHE_DIR or ~/.cache/ramer-timelines, corpus-features/)")
    corpus.add_argument("--config", type=Path, metavar="FILE", help="pipeline configuration (as for `pipeline run`)")


# ------------------------------------------------------------------------------------------ rows
