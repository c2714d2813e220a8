"""A self-contained HTML report of a timeline: the video with one lane per character beneath it.

The report is a single file a researcher can mail or archive and open years later without a server or a
network: the page's CSS and JavaScript are inline, thumbnails are data: URIs, and the timeline data sits in
a ``<script type="application/json">`` block that the page's own script draws from. The video is embedded
too while it is small enough for a browser to hold comfortably; a larger one is referenced by a path
relative to the report (the page says so), so the report and the video travel together as a folder.

Only what the page shows goes into the embedded data (no face tracks, embeddings or word timings): the
timeline JSON beside it stays the lossless master.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import mimetypes
import os
import re
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from extractors.io import write_atomically
from pipeline.errors import UserError
from pipeline.render.colors import emotion_color

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
OVERLAY_NAME = "overlay.mp4"
# A base64 data: URI is 4/3 of the file and the browser keeps it all in memory; past this size a link to
# the file beside the report is kinder than a 100 MB HTML page.
EMBED_LIMIT_BYTES = 40 * 1024 * 1024
THUMBNAIL_SIDE = 128

_VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg",
                ".mov": "video/quicktime", ".mkv": "video/x-matroska"}
_PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")


def label_colors(labels: list[str]) -> dict[str, str]:
    """Each label's colour from pipeline.render.colors, so a label looks the same here, in the plots and
    on the overlay."""
    return {label: emotion_color(label, index) for index, label in enumerate(labels)}


@dataclass(frozen=True)
class PlayerSource:
    """What the page's <video> plays: a data: URI or a relative URL (empty: no player)."""
    kind: str          # "embedded", "linked" or "none"
    src: str
    note: str
    time_offset: float  # add to a timeline time to get the player's currentTime (the video's start_offset)


def write_report(timeline: dict, timeline_path: Path, out_dir: Path, video: Path | None, *,
                 embed_limit: int = EMBED_LIMIT_BYTES) -> Path:
    """Writes ``out_dir/report.html`` for ``timeline`` (read from ``timeline_path``) and returns its path.

    The player shows ``out_dir/overlay.mp4`` when a render made one, else ``video`` (None and no overlay:
    the lanes work on their own). Thumbnails are looked up relative to ``timeline_path``'s folder, where
    ``pipeline run`` writes them.
    """
    out_dir = Path(out_dir)
    source = _player_source(timeline, out_dir, video, embed_limit)
    data = _page_data(timeline, Path(timeline_path), source)
    page = _render_page(data, source, title=_title(timeline))
    try:
        path = write_atomically(out_dir / REPORT_NAME, lambda temporary: temporary.write_text(page, encoding="utf-8"))
    except OSError as error:
        raise UserError(f"cannot write the report into {out_dir}: {error.strerror or error}") from None
    log.info("wrote %s (%.1f MB, video %s)", path, len(page.encode()) / 1e6, source.kind)
    return path


def _title(timeline: dict) -> str:
    name = Path(str(timeline.get("video", {}).get("path", "") or "timeline")).name
    return f"Emotion timeline: {name}"


def _player_source(timeline: dict, out_dir: Path, video: Path | None, embed_limit: int) -> PlayerSource:
    """Prefers the overlay (it shows the boxes and names); embeds small files, links large ones."""
    overlay = out_dir / OVERLAY_NAME
    # Chromium's currentTime is container time (a first frame at pts 2 s plays at currentTime 2), and the
    # overlay keeps the source's timestamps: both are the timeline's time plus the video's start offset.
    offset = float(timeline.get("video", {}).get("start_offset", 0.0) or 0.0)
    if overlay.is_file():
        chosen, what = overlay, "the overlay video"
    elif video is not None and Path(video).is_file():
        chosen, what = Path(video), "the source video"
    else:
        if video is not None:
            log.warning("video %s not found; the report has no player", video)
        return PlayerSource("none", "", "No video given: the lanes below work without a player.", 0.0)
    size = chosen.stat().st_size
    mime = _VIDEO_TYPES.get(chosen.suffix.lower()) or mimetypes.guess_type(chosen.name)[0] or "video/mp4"
    if size <= embed_limit:
        payload = base64.b64encode(chosen.read_bytes()).decode("ascii")
        return PlayerSource("embedded", f"data:{mime};base64,{payload}",
                            f"Playing {what} ({chosen.name}, {size / 1e6:.1f} MB), embedded in this page.", offset)
    return PlayerSource("linked", _relative_url(chosen, out_dir),
                        f"Playing {what} from {_relative_path(chosen, out_dir)} beside this report "
                        f"({size / 1e6:.0f} MB is too large to embed): keep the two files together.", offset)


def _relative_path(target: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows): only an absolute path reaches it
        return target.resolve().as_posix()


def _relative_url(target: Path, start: Path) -> str:
    try:
        return urllib.parse.quote(Path(os.path.relpath(target.resolve(), start.resolve())).as_posix())
    except ValueError:
        return target.resolve().as_uri()


def _thumbnail_uri(timeline_path: Path, thumbnail: dict | None) -> str | None:
    """The character's face crop, shrunk and embedded; None when the file is missing or unreadable."""
    if not thumbnail or not thumbnail.get("file"):
        return None
    path = timeline_path.parent / thumbnail["file"]
    try:
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
    except (OSError, ValueError) as error:
        log.warning("thumbnail %s not embedded: %s", path, error)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _page_data(timeline: dict, timeline_path: Path, source: PlayerSource) -> dict[str, Any]:
    """The subset of the timeline the page draws, in compact form (probabilities as lists in label order)."""
    model = timeline.get("model", {})
    labels = list(model.get("labels", []))
    meta = timeline.get("video", {})
    characters = [{
        "id": c["id"],
        "name": c.get("name") or c["id"],
        "named": bool(c.get("name")),
        "screen_time": float(c.get("screen_time", 0.0)),
        "speaking_time": float(c.get("speaking_time", 0.0)),
        "thumbnail": _thumbnail_uri(timeline_path, c.get("thumbnail")),
    } for c in timeline.get("characters", [])]
    segments = [{
        "id": s["id"], "start": s["start"], "end": s["end"], "character": s.get("character"),
        "confidence": s.get("speaker_confidence"), "voice": s.get("voice"), "text": s.get("text", ""),
    } for s in timeline.get("segments", [])]
    entries = [{
        "character": e["character"], "start": e["start"], "end": e["end"], "segment": e.get("segment"),
        "role": e.get("role", "listener"), "modalities": e.get("modalities", []),
        "probs": [round(float(e.get("probs", {}).get(label, 0.0)), 4) for label in labels],
        "labels": e.get("labels", []),
    } for e in timeline.get("timeline", [])]
    end = max([meta.get("duration", 0.0)] + [e["end"] for e in entries] + [s["end"] for s in segments])
    provenance = timeline.get("provenance", {})
    return {
        "title": _title(timeline),
        "video": {"path": meta.get("path"), "duration": float(end), "fps": meta.get("fps"),
                  "width": meta.get("width"), "height": meta.get("height")},
        "player": {"kind": source.kind, "note": source.note, "time_offset": source.time_offset},
        "timeline_file": timeline_path.name,
        "labels": labels,
        "colors": label_colors(labels),
        "threshold": model.get("threshold"),
        "thresholds": model.get("thresholds"),
        "characters": characters,
        "segments": segments,
        "entries": entries,
        "created": provenance.get("created"),
        "version": provenance.get("package_version"),
    }


def _script_json(data: dict) -> str:
    """JSON safe inside a <script> element: no '<' (so no '</script>' or '<!--') and no raw '&' or '>'."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files("pipeline.render").joinpath("report_assets", name).read_text(encoding="utf-8")


def _render_page(data: dict, source: PlayerSource, title: str) -> str:
    """Fills the template in one pass, so text inside the data can never be taken for a placeholder."""
    script, style = _asset("report.js"), _asset("report.css")
    if "</script" in script.lower() or "</style" in style.lower():
        raise RuntimeError("report assets must not close their own inline element")
    if source.kind == "none":
        player = '<div id="no-video" class="no-video">No video</div>'
    else:
        player = (f'<video id="video" controls preload="auto" src="{html.escape(source.src, quote=True)}">'
                  "</video>")
    parts = {
        "TITLE": html.escape(title),
        "STYLE": style,
        "PLAYER": player,
        "PLAYER_NOTE": html.escape(source.note),
        "DATA": _script_json(data),
        "SCRIPT": script,
    }
    return _PLACEHOLDER.sub(lambda match: parts[match.group(1)], _asset("report.html"))
