"""``python -m pipeline export TIMELINE.json --format FMT``: the timeline in the formats other tools read."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

EPILOG_TAIL = """
files (default: beside the timeline, <timeline stem><ext>, e.g. timeline.srt):
  one format:      -o FILE, or -o FOLDER for FOLDER/<stem><ext>
  several formats: -o FOLDER (created if missing)
Everything comes from the timeline JSON; the video is not read (ELAN's file only links it).
Each file is written whole or not at all.

exit status:
  0    every file was written
  2    a timeline that is missing or does not follow the schema, an unknown format, an unwritable
       output; one line says what
"""


def _epilog() -> str:
    from pipeline.export import DESCRIPTIONS, EXTENSIONS

    lines = ["formats:"]
    lines += [f"  {name:<10} {EXTENSIONS[name]:<11} {text}" for name, text in DESCRIPTIONS.items()]
    lines.append("  all        every format above")
    return "\n".join(lines) + "\n" + EPILOG_TAIL


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a timeline as SRT, WebVTT, RTTM, ELAN, Praat TextGrid or CSV",
        description="Write the timeline JSON of `pipeline run` in the formats researchers import: subtitles "
                    "with speaker names, diarization turns, annotation tiers, tables.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("timeline", type=Path, help="timeline.json written by `pipeline run`")
    parser.add_argument("-f", "--format", required=True, metavar="FMT[,FMT]",
                        help="one or more formats, comma-separated (see below), or all")
    parser.add_argument("-o", "--output", type=Path, metavar="PATH",
                        help="output file (one format) or folder (default: beside the timeline)")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.export import export, parse_formats
    from pipeline.timeline import read_timeline

    formats = parse_formats(args.format)  # an unknown name fails before the timeline is read
    document = read_timeline(args.timeline)
    for path in export(document, formats, args.output, timeline_path=args.timeline):
        log.debug("%s", path)
    return 0
