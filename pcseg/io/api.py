"""``read`` and ``write``: formats by extension (or ``format=``), stdin/stdout with ``-``, atomic writes."""
from __future__ import annotations

import io
import os
import sys

import numpy as np

from ..errors import BadInputError, UsageError
from .atomic import atomic_write
from .cloud import PointCloud

# format name -> file extensions
FORMATS = {
    "las": (".las",),
    "laz": (".laz",),
    "ply": (".ply",),
    "bin": (".bin",),
    "npy": (".npy",),
    "txt": (".txt", ".xyz", ".csv", ".pts"),
    "pcd": (".pcd",),
    "s3dis": (),
}
WRITABLE = ("las", "laz", "ply", "bin", "npy", "txt", "pcd")
_EXT = {ext: name for name, exts in FORMATS.items() for ext in exts}


def format_from_path(path: str) -> str | None:
    return _EXT.get(os.path.splitext(path)[1].lower())


def sniff(head: bytes) -> str | None:
    """Format from the first bytes of a stream, or None when it cannot be told (``.bin``, text)."""
    if head[:4] == b"LASF":
        if len(head) > 104:
            # Point data format id at byte 104; bits 6-7 set mean LAZ-compressed points.
            return "laz" if head[104] & 0xC0 else "las"
        return "las"
    if head[:4] in (b"ply\n", b"ply\r"):
        return "ply"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:5] in (b"# .PC", b"VERSI"):
        return "pcd"
    return None


def resolve_format(path: str, format: str | None, head: bytes | None = None) -> str:
    if format is not None:
        fmt = format.lower().lstrip(".")
        fmt = {"kitti": "bin", "xyz": "txt", "csv": "txt"}.get(fmt, fmt)
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {format!r}; known: {', '.join(FORMATS)}")
        return fmt
    if path != "-" and os.path.isdir(path):
        from .s3dis import is_s3dis_room

        if is_s3dis_room(path):
            return "s3dis"
        raise BadInputError("is a directory, not a point cloud file (an S3DIS room folder needs Annotations/)", path)
    fmt = format_from_path(path) if path != "-" else None
    if fmt is None and head is not None:
        fmt = sniff(head)
    if fmt is None:
        if path == "-":
            raise UsageError("cannot tell the format of standard input: pass --format (las, laz, ply, bin, npy, txt, pcd)")
        ext = os.path.splitext(path)[1] or "(none)"
        raise BadInputError(f"unknown file extension {ext}; pass --format (known: {', '.join(FORMATS)})", path)
    return fmt


def _check_cloud(cloud: PointCloud, path: str) -> PointCloud:
    if len(cloud) == 0:
        raise BadInputError("the cloud has no points", path)
    bad = ~np.isfinite(cloud.xyz).all(axis=1)
    if bad.any():
        raise BadInputError(f"{int(bad.sum())} points have NaN or infinite coordinates "
                            f"(first at row {int(np.argmax(bad))})", path)
    return cloud


def read(path: str | os.PathLike, format: str | None = None, columns: str | None = None,
         labels: str | None = None) -> PointCloud:
    """Read a point cloud. ``path`` ``-`` reads standard input (``format`` needed where it cannot be sniffed).

    ``columns``: column spec for ``.bin`` (count or names), ``.npy`` and text files (``x,y,z,intensity,class``).
    ``labels``: a SemanticKITTI ``.label`` file for a ``.bin`` scan.
    Raises :class:`BadInputError` (one line naming the file and the problem) for anything wrong with the data.
    """
    path = os.fspath(path)
    label = "<stdin>" if path == "-" else path
    if path == "-":
        data = sys.stdin.buffer.read()
        fmt = resolve_format(path, format, data[:128])
    else:
        if not os.path.exists(path):
            raise BadInputError("no such file or directory", path)
        fmt = resolve_format(path, format)
        data = None
        if fmt != "s3dis":
            if os.path.isdir(path):
                raise BadInputError("is a directory, not a point cloud file", path)
            if fmt not in ("las", "laz", "ply"):
                with open(path, "rb") as f:
                    data = f.read()
    if labels is not None and fmt != "bin":
        raise UsageError("a separate labels file is only read with .bin scans (SemanticKITTI .label)")
    if fmt == "s3dis":
        from .s3dis import read_s3dis_room

        cloud = read_s3dis_room(path)
    elif fmt in ("las", "laz"):
        from .las import read_las

        cloud = read_las(data if data is not None else path, label)
    elif fmt == "ply":
        from .ply import read_ply

        cloud = read_ply(data if data is not None else path, label)
    elif fmt == "bin":
        from .simple import read_bin

        cloud = read_bin(data, label, columns=columns, labels=labels)
    elif fmt == "npy":
        from .simple import read_npy

        cloud = read_npy(data, label, columns=columns)
    elif fmt == "txt":
        from .simple import read_text

        cloud = read_text(data, label, columns=columns)
    else:
        from .pcd import read_pcd

        cloud = read_pcd(data, label)
    cloud.meta.setdefault("source", label)
    return _check_cloud(cloud, label)


def _serialise(cloud: PointCloud, fmt: str, dest, label: str) -> list[str]:
    if fmt in ("las", "laz"):
        from .las import write_las

        return write_las(cloud, dest, compressed=(fmt == "laz"), path=label)
    if fmt == "ply":
        from .ply import write_ply

        return write_ply(cloud, dest, label)
    if fmt == "bin":
        from .simple import write_bin

        return write_bin(cloud, dest, label)
    if fmt == "npy":
        from .simple import write_npy

        return write_npy(cloud, dest, label)
    if fmt == "txt":
        from .simple import write_text

        return write_text(cloud, dest, label)
    if fmt == "pcd":
        from .pcd import write_pcd

        return write_pcd(cloud, dest, label)
    raise UsageError(f"cannot write format {fmt!r}; writable: {', '.join(WRITABLE)}")


def write(cloud: PointCloud, path: str, format: str | None = None) -> list[str]:
    """Write ``cloud`` atomically (temporary file in the same folder, then rename); ``-`` writes stdout.

    Returns notes for the user (fields a format cannot hold, conversions made). Nothing is left behind when
    writing fails.
    """
    if format is None and path == "-":
        raise UsageError("writing to standard output needs --format (las, laz, ply, bin, npy, txt, pcd)")
    fmt = resolve_format(path, format) if format is not None or path == "-" else format_from_path(path)
    if fmt is None:
        raise UsageError(f"cannot tell the output format of {path!r} from its extension; pass --format")
    if fmt not in WRITABLE:
        raise UsageError(f"cannot write format {fmt!r}; writable: {', '.join(WRITABLE)}")
    if path == "-":
        buf = io.BytesIO()
        notes = _serialise(cloud, fmt, buf, "<stdout>")
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return notes
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInputError("output folder does not exist", folder)
    return atomic_write(path, lambda f: _serialise(cloud, fmt, f, path))


def same_file(a: str, b: str) -> bool:
    """True when two paths name the same existing file (used to refuse overwriting an input)."""
    if a == "-" or b == "-":
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
