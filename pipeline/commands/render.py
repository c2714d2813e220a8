"""``python -m pipeline render TIMELINE.json``: overlay video, lane plots and HTML report (see pipeline.render)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

EPILOG = """\
outputs (in DIR, default the timeline's folder):
  overlay.mp4       the video with face boxes, names, who is talking, top emotions and the subtitle (audio kept)
  timeline.png      one lane per character: speaking/listening, emotion probabilities, transcript turns
  emotion_mix.png   each character's time-weighted emotion mix
  report.html       one self-contained page: player, lanes beneath, click to seek, hover for details

The video is --video, else the timeline's video.path (absolute, or relative to the timeline's folder or the
working folder); it must be the file the timeline was made from (same SHA-256) unless --force. Without a
video only the plots and the report are made.

exit status:
  0    written
  2    bad input: a timeline that does not validate, a --video that is missing, unreadable or not the
       timeline's (without --force), an unwritable DIR; one line says what, nothing is left half-written
  130  interrupted
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "render", help="overlay video, lane plots and HTML report of a timeline",
        description="Draw a timeline JSON from `pipeline run`: an overlay video, a lane plot per character, "
                    "an emotion-mix chart and a self-contained HTML report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("timeline", type=Path, metavar="TIMELINE.json", help="a timeline written by pipeline run")
    parser.add_argument("--video", type=Path, metavar="VIDEO", help="the source video (default: the timeline's)")
    parser.add_argument("-o", "--output", type=Path, metavar="DIR", help="output folder (default: the timeline's)")
    parser.add_argument("--force", action="store_true",
                        help="draw on a video whose SHA-256 differs from the timeline's (a warning, not an error)")
    parser.add_argument("--no-video", action="store_true", help="skip the overlay video")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors; no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.render import render

    result = render(args.timeline, args.output, args.video, force=args.force, overlay=not args.no_video,
                    report=not args.no_report, quiet=bool(getattr(args, "quiet", False)))
    log.info("%s", result.summary())
    return 0
