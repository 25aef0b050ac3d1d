"""The `pcseg` command. Commands live in modules that register themselves; none imports torch at import
time, so `pcseg --help`, `info`, `convert`, `subsample` and `tile` start fast."""
from __future__ import annotations

import os

# OpenMP threads that wait for work spin only briefly before they sleep. libgomp's default spin (300,000
# rounds) collapses a process that shares its cores: SALANet C=36 train step, 15k points, 2 threads, with one
# busy process beside it: 1.26 s (and up to 12.7 s with more load) at the default, 0.82 s at 3,000 rounds,
# 0.65 s with OMP_WAIT_POLICY=PASSIVE; idle, 0.38 / 0.39 / 0.45 s (benchmarks/README.md). 3,000 keeps the idle
# speed; a user who shares the cores can set OMP_WAIT_POLICY=PASSIVE, and any setting of theirs wins. Read
# when torch loads libgomp, so before any import of torch.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")

import importlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import Optional

import typer

from .. import __version__
from ..errors import PcsegError

app = typer.Typer(
    name="pcseg",
    help="Segment and detect objects in point clouds (KPConv, SALA, SRKD, Focals Conv).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

COMMAND_MODULES = ("io_cmds", "segment_cmds", "detect_cmds", "train_cmds", "adapt_cmds", "distill_cmds", "models_cmds",
                   "export_cmds", "render_cmds")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pcseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="print the version and exit"),
) -> None:
    """Exit codes: 0 ok, 1 internal failure, 2 usage error, 3 bad input data."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after the handler is made)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


def _route_warnings(quiet: bool) -> None:
    """Warnings of pcseg's modules (e.g. a scan without colour read by a colour-optional model) as one
    ``pcseg: ...`` line on stderr, like every other message, and none with --quiet."""
    logger = logging.getLogger("pcseg")
    handler = next((h for h in logger.handlers if isinstance(h, _Stderr)), None)
    if handler is None:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("pcseg: %(message)s"))
        logger.addHandler(handler)
    # on the handler, not the logger: records still reach the root's handlers (none in the CLI)
    handler.setLevel(logging.ERROR if quiet else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors with exit codes 1 (internal), 2 (usage), 3 (bad input)."""
    debug = bool(os.environ.get("PCSEG_DEBUG"))
    from ..engine.runtime import configure_allocator

    configure_allocator()  # torch on a CPU: keep freed memory instead of page-faulting it back every step
    _route_warnings(quiet=bool({"-q", "--quiet"} & set(sys.argv[1:] if argv is None else argv)))
    try:
        rc = app(args=argv, prog_name="pcseg", standalone_mode=False)
    except PcsegError as e:
        if debug:
            raise
        print(f"pcseg: error: {e}", file=sys.stderr)
        return e.exit_code
    except typer.Abort:
        print("pcseg: aborted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("pcseg: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("pcseg: error: out of memory; process a smaller file or fewer points at once", file=sys.stderr)
        return 1
    except Exception as e:
        if _is_usage_error(e):  # click's (or typer's vendored click's) UsageError and BadParameter
            print(f"pcseg: usage error: {e.format_message()}", file=sys.stderr)
            return 2
        # An internal failure: one line, the traceback only with PCSEG_DEBUG=1
        if debug:
            raise
        print(f"pcseg: internal error: {type(e).__name__}: {e} (rerun with PCSEG_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    return rc if isinstance(rc, int) else 0


def _is_usage_error(e: Exception) -> bool:
    return getattr(e, "exit_code", None) == 2 and hasattr(e, "format_message")


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
