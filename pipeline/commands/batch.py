"""``python -m pipeline batch INPUT -o OUT``: timelines for a whole corpus, resumable (see pipeline.batch)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

EPILOG = """\
INPUT:
  a folder     every video below it (.mp4 .mkv .avi .mov .webm ...); the show is the first folder below
               INPUT (INPUT's own name for videos directly in it); S01E02 / 1x02 in a name gives the order
  a manifest   .csv with a header, or .jsonl with one object per line; columns: path (required, relative to
               the manifest), show, season, episode, cast (a cast file for that row; default --cast)

outputs (in OUT):
  <show>/<episode>/timeline.json   each episode, as `pipeline run` writes it (stage cache in .stages/)
  <show>/identities.json           show-level identities: the characters matched across episodes by face
  <show>/characters.csv            per character per episode: identity, screen/speaking time, emotion mix
  <show>/emotion_mix.png           each identity's emotion mix over the season
  index.json                       every episode: status, paths, duration
  failures.jsonl                   one line per failed attempt: path, stage, error, time, attempt

resume: a rerun skips every episode whose timeline validates and was made from the same video and
settings, and an episode that failed for good (a corrupt file) unless --retry-failed; a killed run
restarts where it stopped (finished episodes stay, stages of the unfinished one are cached).

exit status:
  0    every episode has its timeline
  1    some episodes failed or were not run (see failures.jsonl and index.json); the others are written
  2    bad arguments or input (a missing INPUT, bad manifest rows with their line numbers, a bad cast
       file or checkpoint, an unwritable OUT, another batch writing to OUT); nothing was run
  130  interrupted (run again to resume)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch", help="timelines for a folder or manifest of episodes, resumable, local or on Ray",
        description="Run the pipeline on every episode of a corpus (a process pool here, or Ray), skip what is\n"
                    "finished, record failures and go on, then match characters across each show's episodes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, metavar="INPUT", help="a folder of videos or a .csv/.jsonl manifest")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT", required=True, help="output folder")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="parallel workers, each loading the models once (default: one per GPU, else 1)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: a process pool on this machine (default); ray: Ray Data actors")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: a local Ray")
    parser.add_argument("--max-failures", type=int, metavar="N",
                        help="start no more episodes once N have failed (default: go on through all)")
    parser.add_argument("--retries", type=int, default=2, metavar="N",
                        help="further attempts after a transient error (I/O, memory, a crashed worker); "
                             "bad input is never retried (default 2)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="retry episodes that failed for good in an earlier run (default: skip them)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML/JSON configuration (as for `run`)")
    parser.add_argument("--checkpoint", type=Path, metavar="DIR", help="RAMer checkpoint folder")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"),
                        help="where PyTorch stages run (default: config); GPUs are shared one per worker")
    parser.add_argument("--cast", type=Path, metavar="FILE",
                        help="cast file naming the characters, for every episode without its own")
    parser.add_argument("--force", action="store_true", help="recompute every episode and stage")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors; no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.batch import BatchOptions, run_batch

    options = BatchOptions(
        input=args.input, output=args.output, workers=args.workers, engine=args.engine,
        ray_address=args.ray_address, max_failures=args.max_failures, retries=args.retries, config=args.config,
        checkpoint=args.checkpoint, device=args.device, cast=args.cast, force=args.force,
        retry_failed=args.retry_failed, quiet=bool(getattr(args, "quiet", False)))
    report = run_batch(options)
    log.info("%s", report.summary())
    return report.exit_status
