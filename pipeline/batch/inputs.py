"""What a batch processes: the episodes of a folder (recursively) or of a manifest (CSV or JSONL).

A manifest row names a video (``path``, relative to the manifest's folder unless absolute) and optionally
its ``show``, ``season``, ``episode`` and ``cast`` file. In a folder, the show is the first folder below
INPUT (INPUT's own name for videos directly in it); season and episode numbers are read from names like
``S01E02`` or ``1x02`` when present. Every bad row is reported with its line number before anything runs.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".avi", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts",
                            ".wmv", ".flv", ".3gp", ".ogv"})
MANIFEST_COLUMNS = ("path", "show", "season", "episode", "cast")
MAX_REPORTED_ROWS = 12          # a manifest with hundreds of bad rows gets the first ones, and a count
_SEASON_EPISODE = (re.compile(r"[Ss](\d{1,3})[ ._-]?[Ee](\d{1,4})"), re.compile(r"(?<!\d)(\d{1,2})x(\d{2,3})(?!\d)"))
_UNSAFE = re.compile(r"[^\w .,()+-]+")


@dataclass(frozen=True)
class Episode:
    """One video of the batch and where its outputs go (``OUT/<show>/<name>/``)."""

    video: Path                 # absolute
    show: str                   # folder-safe show name
    name: str                   # the episode's output folder: the video's stem
    season: str | None = None
    episode: str | None = None
    cast: Path | None = None
    source: str = ""            # where it came from, for messages: "manifest.csv:7" or the relative path

    @property
    def key(self) -> str:
        return f"{self.show}/{self.name}"


def safe_name(text: str) -> str:
    """A folder name from a show or episode name: path separators and odd characters become ``_``."""
    cleaned = _UNSAFE.sub("_", text.strip()).strip(". ")
    return cleaned or "_"


def season_episode(name: str) -> tuple[str | None, str | None]:
    """``("1", "2")`` from ``Show.S01E02.mkv`` or ``show 1x02``; ``(None, None)`` when the name says neither."""
    for pattern in _SEASON_EPISODE:
        match = pattern.search(name)
        if match:
            return str(int(match.group(1))), str(int(match.group(2)))
    return None, None


def read_input(source: Path, cast: Path | None = None, exclude: Path | None = None) -> list[Episode]:
    """The episodes of ``source`` (a folder or a .csv/.jsonl manifest); ``cast`` applies where a row has none.

    ``exclude``: a folder whose videos are never inputs (the batch's own output folder inside INPUT).
    """
    if not source.exists():
        raise UserError(f"input {source} does not exist")
    if source.is_dir():
        episodes = read_folder(source, cast, exclude)
    elif source.suffix.lower() == ".csv":
        episodes = read_manifest_rows(source, _csv_rows(source), cast)
    elif source.suffix.lower() in (".jsonl", ".ndjson"):
        episodes = read_manifest_rows(source, _jsonl_rows(source), cast)
    else:
        raise UserError(f"input {source} is neither a folder nor a manifest (.csv or .jsonl); "
                        "for one video use `pipeline run`")
    if not episodes:
        raise UserError(f"no videos in {source} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
    _check_unique(episodes)
    return episodes


def read_folder(folder: Path, cast: Path | None = None, exclude: Path | None = None) -> list[Episode]:
    """Every video below ``folder`` (hidden folders and ``exclude`` skipped), in name order."""
    folder = folder.resolve()
    excluded = exclude.resolve() if exclude is not None else None
    episodes = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if excluded is not None and (path == excluded or excluded in path.parents):
            continue
        if not path.is_file() or path.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        show = relative.parts[0] if len(relative.parts) > 1 else folder.name
        season, number = season_episode(path.stem)
        if season is None and len(relative.parts) > 2:  # Show/Season 2/episode 05.mkv
            season = _number_in(relative.parts[-2])
        episodes.append(Episode(path, safe_name(show), safe_name(path.stem), season, number, cast,
                                str(relative)))
    return episodes


def _number_in(text: str) -> str | None:
    match = re.search(r"\d+", text)
    return str(int(match.group())) if match else None


def _csv_rows(path: Path) -> list[tuple[int, dict | str]]:
    """(line number, row or error message) per data row of a CSV manifest with a header."""
    rows: list[tuple[int, dict | str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)   # not DictReader: it skips blank lines, and line numbers with them
            header = [name.strip() for name in next(reader, [])]
            if "path" not in header:
                raise UserError(f"{path}:1: the header needs a 'path' column (columns: {', '.join(MANIFEST_COLUMNS)})")
            start = reader.line_num + 1
            for fields in reader:
                if len(fields) > len(header):
                    rows.append((start, f"more fields than the header has ({len(header)})"))
                elif any(value.strip() for value in fields):
                    values = [value.strip() for value in fields] + [""] * (len(header) - len(fields))
                    rows.append((start, dict(zip(header, values, strict=True))))
                start = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read the manifest {path}: {error}") from None
    return rows


def _jsonl_rows(path: Path) -> list[tuple[int, dict | str]]:
    rows: list[tuple[int, dict | str]] = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the manifest {path}: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            rows.append((number, f"not JSON ({error.msg})"))
            continue
        if not isinstance(row, dict):
            rows.append((number, "expected a JSON object like {\"path\": \"ep01.mkv\"}"))
            continue
        rows.append((number, {str(k): "" if v is None else str(v).strip() for k, v in row.items()}))
    return rows


def read_manifest_rows(manifest: Path, rows: list[tuple[int, dict | str]], cast: Path | None) -> list[Episode]:
    """Episodes from parsed rows; all problems collected and raised as one line with line numbers."""
    base = manifest.resolve().parent
    problems: list[str] = []
    episodes: list[Episode] = []
    for line, row in rows:
        where = f"{manifest.name}:{line}"
        if isinstance(row, str):
            problems.append(f"{where}: {row}")
            continue
        unknown = sorted(set(row) - set(MANIFEST_COLUMNS))
        if unknown:
            problems.append(f"{where}: unknown column {', '.join(map(repr, unknown))} "
                            f"(columns: {', '.join(MANIFEST_COLUMNS)})")
            continue
        if not row.get("path"):
            problems.append(f"{where}: no path")
            continue
        video = _resolve(base, row["path"])
        if not video.is_file():
            problems.append(f"{where}: {row['path']} {'is a folder' if video.is_dir() else 'does not exist'}")
            continue
        row_cast = _resolve(base, row["cast"]) if row.get("cast") else cast
        if row_cast is not None and not row_cast.is_file():
            problems.append(f"{where}: cast file {row.get('cast') or row_cast} does not exist")
            continue
        show = row.get("show") or manifest.stem
        season, number = season_episode(video.stem)
        episodes.append(Episode(video, safe_name(show), safe_name(video.stem), row.get("season") or season,
                                row.get("episode") or number, row_cast, where))
    if problems:
        more = f"; and {len(problems) - MAX_REPORTED_ROWS} more" if len(problems) > MAX_REPORTED_ROWS else ""
        raise UserError(f"bad manifest rows: {'; '.join(problems[:MAX_REPORTED_ROWS])}{more}")
    return episodes


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _check_unique(episodes: list[Episode]) -> None:
    """Two videos may not share an output folder (same show, same stem), nor may one video come twice."""
    seen: dict[str, Episode] = {}
    videos: dict[Path, Episode] = {}
    for episode in episodes:
        if episode.video in videos:
            raise UserError(f"{episode.video} is listed twice ({videos[episode.video].source} and {episode.source})")
        videos[episode.video] = episode
        other = seen.get(episode.key)
        if other is not None:
            raise UserError(f"{other.source} and {episode.source} would both write OUT/{episode.key}: rename one "
                            "or give them different shows in a manifest")
        seen[episode.key] = episode


def natural_key(text: str | None) -> tuple:
    """Sorts "2" before "10" and "E2" before "E10"; None last."""
    if text is None:
        return (1,)
    return (0, *[(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", text) if part])


def episode_order(episode: Episode) -> tuple:
    """Season, episode number, name: the order of a season's plot."""
    return natural_key(episode.season), natural_key(episode.episode), natural_key(episode.name)
