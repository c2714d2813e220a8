"""Pictures of a timeline JSON: an overlay video, lane plots and an HTML report (``python -m pipeline render``).

Everything is derived from the timeline (the lossless master), so it can be re-made without re-running
the analysis. The heavy modules (PyAV, matplotlib) are imported by :func:`render` when used, so
importing this package, or ``pipeline.render.report`` alone, stays cheap.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import UserError

log = logging.getLogger(__name__)

OVERLAY_NAME = "overlay.mp4"


@dataclass
class RenderResult:
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    video: Path | None = None        # the source video used (None: plots and report only)
    video_seconds: float = 0.0       # of overlay written
    overlay_seconds: float = 0.0     # wall time spent on the overlay
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        names = ", ".join(path.name for path in self.written) or "nothing"
        speed = (f"; overlay at {self.overlay_seconds / self.video_seconds:.2f} s per video second"
                 if self.video_seconds else "")
        return f"wrote {names} in {self.out_dir}{speed}"


def prepare_output(out_dir: Path) -> Path:
    """Creates ``out_dir`` and proves it writable now, before any work (UserError otherwise)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".render-check.", dir=out_dir)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"cannot write to {out_dir} ({error.strerror or error}); give a writable -o folder") \
            from None
    return out_dir


def locate_video(timeline: dict, timeline_path: Path, given: Path | None) -> Path | None:
    """``given`` (UserError when missing), else the timeline's video.path: absolute, or relative to the
    timeline's folder or to the working folder. None when nothing is found."""
    if given is not None:
        if not given.is_file():
            raise UserError(f"--video {given}: no such file")
        return given
    recorded = Path(timeline["video"]["path"])
    candidates = [recorded] if recorded.is_absolute() else [timeline_path.parent / recorded, Path.cwd() / recorded]
    return next((path for path in candidates if path.is_file()), None)


def check_video(timeline: dict, video: Path, force: bool) -> str | None:
    """Refuses (UserError) a video whose SHA-256 is not the timeline's; with ``force`` returns a warning."""
    from pipeline.stage_cache import file_sha256

    try:
        digest = file_sha256(video)
    except OSError as error:
        raise UserError(f"{video}: cannot be read ({error.strerror or error})") from None
    expected = timeline["video"]["sha256"]
    if digest == expected:
        return None
    message = (f"{video} is not the video this timeline was made from (sha256 {digest[:12]}…, the timeline "
               f"says {expected[:12]}…)")
    if not force:
        raise UserError(f"{message}; give the right one with --video, or --force to draw on it anyway")
    return f"{message}; drawing on it anyway (--force): boxes and times may not match the picture"


def render(timeline_path: Path, out_dir: Path | None = None, video: Path | None = None, *, force: bool = False,
           overlay: bool = True, report: bool = True, quiet: bool = False) -> RenderResult:
    """Writes overlay.mp4, timeline.png, emotion_mix.png and report.html for one timeline JSON."""
    import time

    from pipeline.progress import progress_bar
    from pipeline.timeline import read_timeline

    timeline_path = Path(timeline_path)
    timeline = read_timeline(timeline_path)
    result = RenderResult(Path(out_dir) if out_dir is not None else timeline_path.parent)
    needs_video = overlay or report
    source = locate_video(timeline, timeline_path, video) if needs_video else None
    if source is not None:
        warning = check_video(timeline, source, force)
        if warning:
            log.warning("%s", warning)
            result.warnings.append(warning)
        if overlay:
            from extractors.media import probe

            probe(source)   # an unreadable video fails here (MediaError), before anything is written
    elif needs_video:
        warning = (f"video {timeline['video']['path']} not found (beside {timeline_path.name} or in the working "
                   "folder): plots and report only; give it with --video")
        log.warning("%s", warning)
        result.warnings.append(warning)
    result.video = source
    out_dir = prepare_output(result.out_dir)   # after the checks: a refused render leaves no folder behind

    from pipeline.render.plots import write_plots

    result.written += write_plots(timeline, timeline_path.parent, out_dir)
    if overlay and source is not None:
        from pipeline.render.overlay import render_overlay

        started = time.perf_counter()
        with progress_bar("overlay", quiet) as advance:
            stats = render_overlay(timeline, source, out_dir / OVERLAY_NAME, timeline_path.parent, advance)
        result.overlay_seconds, result.video_seconds = time.perf_counter() - started, stats.seconds
        result.written.append(out_dir / OVERLAY_NAME)
        log.info("overlay: %d frames, %.1f s of video, audio %s, %.1f s", stats.frames, stats.seconds, stats.audio,
                 result.overlay_seconds)
    if report:
        try:
            from pipeline.render.report import write_report
        except ModuleNotFoundError as error:
            if error.name != "pipeline.render.report":
                raise
            log.warning("no HTML report: pipeline/render/report.py is not installed in this version")
        else:
            result.written.append(write_report(timeline, timeline_path, out_dir, source))
    return result
