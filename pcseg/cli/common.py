"""Option helpers shared by commands: format resolution for stdin/stdout and input protection."""
from __future__ import annotations

import os

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
