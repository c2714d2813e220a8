"""``python -m pipeline run VIDEO``: per-character emotion timelines from one video (see pipeline.run)."""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import ExitStack
from pathlib import Path

log = logging.getLogger(__name__)

EPILOG = """\
outputs (in OUT, default out/<video name>/):
  timeline.json        the timeline (schema: pipeline/schemas/timeline.schema.json), written whole or not at all
  timeline.<ext>       with --export: the timeline in other tools' formats (see `python -m pipeline export -h`)
  thumbnails/C*.jpg    one face crop per character
  .stages/             the stage cache: a second run reuses finished stages, an interrupted one resumes

exit status:
  0    the timeline was written
  2    bad input or arguments (missing, corrupt or too short video, no faces, unwritable OUT,
       a checkpoint that does not fit, a missing model, an unknown --export format); one line says what,
       nothing is left half-written
  130  interrupted (finished stages stay cached; run again to resume)
  1    a bug (traceback): please report it
"""

STAGE_NAMES = ("visual", "vad", "asr", "mouths", "diarization", "speaking", "acoustic", "text", "scoring")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="per-character emotion timelines from one video",
        description="Decode, find and track faces, group them into characters, transcribe and diarize the speech, "
                    "tell who is talking, and score every character's emotions with RAMer.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path, help="the video file (any container FFmpeg reads)")
    parser.add_argument("-o", "--output", type=Path, metavar="DIR", help="output folder (default out/<video name>)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML/JSON configuration (models, device, stages)")
    parser.add_argument("--checkpoint", type=Path, metavar="DIR",
                        help="RAMer checkpoint folder (default: the packaged default model)")
    parser.add_argument("--cast", type=Path, metavar="FILE", help="cast file naming the characters (YAML/JSON)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where PyTorch stages run (default: config)")
    parser.add_argument("--num-speakers", type=int, metavar="N",
                        help="number of distinct voices when known (default: estimated, with the number of "
                             "characters on screen as a prior)")
    parser.add_argument("--force", action="store_true", help="recompute every stage instead of reusing the cache")
    parser.add_argument("--strict", action="store_true",
                        help="fail on a video without audio or without speech instead of a visual-only timeline")
    parser.add_argument("--export", metavar="FMT[,FMT]",
                        help="also write these formats beside timeline.json (srt, vtt, rttm, eaf, textgrid, "
                             "csv, faces-csv, or all); the same as `pipeline export` afterwards")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors; no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.export import export, parse_formats
    from pipeline.run import PipelineRunner, check_input

    formats = parse_formats(args.export) if args.export else []  # an unknown format fails before any work
    check_input(args.video, args.strict)  # refuse bad input before any model loads
    from pipeline.config import load_config

    config = load_config(args.config)
    quiet = bool(getattr(args, "quiet", False))
    runner = PipelineRunner(config, checkpoint=args.checkpoint, device=args.device)
    with ExitStack() as stack:
        progress = stack.enter_context(_stage_bars(quiet))
        result = runner.run(args.video, args.output, cast=args.cast, num_speakers=args.num_speakers,
                            force=args.force, strict=args.strict, progress=progress)
    log.info("%s", result.summary())
    if formats:
        export(result.document, formats, timeline_path=result.timeline_path)
    return 0


class _stage_bars:
    """One rich progress bar per stage on a terminal; nothing under --quiet or when stderr is not a tty."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar = None
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if not self.enabled:
            return lambda stage, fraction: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description:<12}"), BarColumn(), TaskProgressColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True))
        self.bar.__enter__()
        return self.update

    def update(self, stage: str, fraction: float) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=1.0)
        self.bar.update(self.tasks[stage], completed=min(1.0, max(0.0, fraction)))

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
