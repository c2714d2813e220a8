"""Progress bars for long commands: rich on a terminal, nothing under ``--quiet`` or in logs/CI."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# (completed, total) -> None
Advance = Callable[[int, int], None]


def _ignore(completed: int, total: int) -> None:
    pass


@contextmanager
def progress_bar(description: str, quiet: bool = False) -> Iterator[Advance]:
    """Yields ``advance(completed, total)``; a live bar only when stderr is a terminal and not quiet."""
    if quiet or not sys.stderr.isatty():
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=None)
        yield lambda completed, total: bar.update(task, completed=completed, total=total)
