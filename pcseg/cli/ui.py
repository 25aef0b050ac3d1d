"""Console output: messages on stderr, rich progress bars only on a terminal and never with --quiet."""
from __future__ import annotations

import contextlib
import sys

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line (logs, pipelines)


def note(message: str, quiet: bool = False) -> None:
    if not quiet:
        err.print(f"[dim]pcseg:[/dim] {message}", markup=True, highlight=False)


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def progress(description: str, total: int | None, quiet: bool):
    """Yields ``advance(n=1)``; draws a bar only on a terminal and without --quiet."""
    if not show_progress(quiet):
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
