"""Option helpers shared by commands: format resolution for stdin/stdout and input protection."""
from __future__ import annotations

import json
import os

import typer

from ..errors import UsageError
from ..io import format_from_path, same_file

FORMAT_HELP = ("format where it cannot be told from the extension (stdin/stdout): las, laz, ply, bin, npy, txt, "
               "pcd, s3dis")


def in_format(path: str, fmt: str | None, in_fmt: str | None) -> str | None:
    """--in-format wins; --format applies to the input when its extension does not tell."""
    if in_fmt:
        return in_fmt
    if fmt and (path == "-" or (format_from_path(path) is None and not os.path.isdir(path))):
        return fmt
    return None


def out_format(path: str, fmt: str | None, out_fmt: str | None) -> str | None:
    if out_fmt:
        return out_fmt
    if path == "-" or format_from_path(path) is None:
        return fmt
    return None


def check_not_input(inputs: list[str], output: str, force: bool) -> None:
    """pcseg never writes over its input unless --force."""
    for src in inputs:
        if same_file(src, output) and not force:
            raise UsageError(f"output {output} is the input file; pcseg will not overwrite it (pass --force to do so)")


def parse_key_values(pairs: list[str]) -> dict:
    """``key=value`` command-line settings (``--option``, training overrides); values parsed as JSON when they can be (numbers, lists, true/false)."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"settings are key=value, got {pair!r}")
        key = key.strip().replace("-", "_")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if "." in key:  # model_options.width=18
            outer, inner = key.split(".", 1)
            out.setdefault(outer, {})[inner] = parsed
        else:
            out[key] = parsed
    return out


# The flags every computing command shares, with one meaning everywhere (factories: typer needs one
# OptionInfo per parameter).
def quiet_option():
    return typer.Option(False, "--quiet", "-q", help="no messages or progress bars on stderr (errors still print)")


def json_option():
    return typer.Option(False, "--json", help="one JSON object per input on stdout")


def threads_option():
    return typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: one per core)")


def device_option():
    return typer.Option("auto", "--device", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
