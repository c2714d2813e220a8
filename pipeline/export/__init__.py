"""Exports of a timeline JSON into the formats other tools read; each derived from the JSON alone.

``FORMATS`` maps a format name (as given to ``--format``) to its writer,
``writer(timeline, path, *, timeline_path) -> Path``, which writes atomically and raises UserError on an
unwritable target. ``export(timeline, formats, out)`` writes several, naming the files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.errors import UserError
from pipeline.export.elan import write_eaf
from pipeline.export.rttm import write_rttm
from pipeline.export.subtitles import write_srt, write_vtt
from pipeline.export.tables import write_csv, write_faces_csv
from pipeline.export.textgrid import write_textgrid

log = logging.getLogger(__name__)

Writer = Callable[..., Path]
FORMATS: dict[str, Writer] = {
    "srt": write_srt,
    "vtt": write_vtt,
    "rttm": write_rttm,
    "eaf": write_eaf,
    "textgrid": write_textgrid,
    "csv": write_csv,
    "faces-csv": write_faces_csv,
}
EXTENSIONS: dict[str, str] = {
    "srt": ".srt", "vtt": ".vtt", "rttm": ".rttm", "eaf": ".eaf", "textgrid": ".TextGrid", "csv": ".csv",
    "faces-csv": ".faces.csv",
}
DESCRIPTIONS: dict[str, str] = {
    "srt": "SubRip subtitles, one cue per segment, 'Name: ' prefixes",
    "vtt": "WebVTT subtitles with <v Name> voice spans",
    "rttm": "speaker turns by character (diarization scoring)",
    "eaf": "ELAN: speech tiers with transcript, dependent emotion and confidence tiers, linked video",
    "textgrid": "Praat TextGrid: speech, role, emotion and confidence interval tiers",
    "csv": "one row per (moment, character), a column per label probability",
    "faces-csv": "one row per analysed face, in py-feat's Fex columns, with 'speaking'",
}
ALL = "all"


def parse_formats(spec: str | Iterable[str]) -> list[str]:
    """``"srt,vtt"`` (or a list of names; ``all`` for every format) -> known names, in order, once each."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        expanded = list(FORMATS) if item == ALL else [item]
        for name in expanded:
            if name not in FORMATS:
                raise UserError(f"unknown export format {item!r}; known: {', '.join(FORMATS)} (or {ALL})")
            if name not in names:
                names.append(name)
    if not names:
        raise UserError(f"no export format given; known: {', '.join(FORMATS)} (or {ALL})")
    return names


def targets(formats: list[str], out: Path | None, timeline_path: Path | None) -> dict[str, Path]:
    """Where each format goes: ``out`` itself for one format (unless it is a folder), else
    ``<folder>/<timeline stem><ext>`` with the folder ``out`` or the timeline's own."""
    stem = timeline_path.stem if timeline_path is not None else "timeline"
    if out is None:
        if timeline_path is None:
            raise UserError("no output given and no timeline file to write beside")
        folder = timeline_path.parent
    elif len(formats) == 1 and not out.is_dir() and not str(out).endswith(os.sep):
        return {formats[0]: out}
    else:
        folder = out
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is not a folder; with several formats -o names a folder")
    return {name: folder / f"{stem}{EXTENSIONS[name]}" for name in formats}


def export(timeline: dict, formats: str | Iterable[str], out: str | os.PathLike | None = None, *,
           timeline_path: str | os.PathLike | None = None) -> list[Path]:
    """Writes ``timeline`` (a validated timeline document) in each format; returns the files written."""
    names = parse_formats(formats)
    timeline_path = Path(timeline_path) if timeline_path is not None else None
    written = []
    for name, path in targets(names, Path(out) if out is not None else None, timeline_path).items():
        try:
            written.append(FORMATS[name](timeline, path, timeline_path=timeline_path))
        except OSError as error:  # a writer's own folder creation, say
            raise UserError(f"cannot write {path}: {error.strerror or error}") from None
        log.info("wrote %s (%s)", path, name)
    return written
