"""LAS/LAZ (LAS 1.0-1.4, point formats 0-10, extra bytes) through laspy, losslessly.

Reading keeps every dimension as its raw stored values (standard dimensions, bit fields and extra bytes) and
the whole header (version, point format, scales, offsets, VLRs/EVLRs with the CRS, extra-bytes
definitions). Writing back with the same points gives the same raw integer X/Y/Z and the same records.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import os
import re
import struct
import sys
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInputError

if TYPE_CHECKING:
    import laspy

    from .cloud import PointCloud

# ASPRS standard classification codes (LAS 1.4 R15, Table 17).
ASPRS_CLASS_NAMES = {0: "created, never classified", 1: "unclassified", 2: "ground", 3: "low vegetation",
                     4: "medium vegetation", 5: "high vegetation", 6: "building", 7: "low point (noise)",
                     8: "model key-point", 9: "water", 10: "rail", 11: "road surface", 12: "overlap",
                     13: "wire guard", 14: "wire conductor", 15: "transmission tower", 16: "wire connector",
                     17: "bridge deck", 18: "high noise"}
SUPPORTED_VERSIONS = {(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)}
_XYZ = ("X", "Y", "Z")
_LAS_EB_TYPES = {np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8")}

# Smallest header of each LAS 1.x minor version and the record size of point formats 0-10 (LAS 1.4 R15).
_MIN_HEADER = {0: 227, 1: 227, 2: 227, 3: 235, 4: 375}
_RECORD_SIZES = (20, 28, 26, 34, 57, 63, 30, 36, 38, 59, 67)
_VARIABLE_CHUNKS = 0xFFFFFFFF  # laszip chunk size meaning "each chunk's point count is in the chunk table"
# Layers of a layered chunk (LAZ 1.4, compressor 3) per laszip item type: POINT14 has 9 (x/y and returns, z,
# classification, flags, intensity, scan angle, user data, point source, GPS time), RGB14 1, RGBNIR14 2,
# WAVEPACKET14 1, BYTE14 one per byte.
_LAYERS = {10: lambda size: 9, 11: lambda size: 1, 12: lambda size: 2, 13: lambda size: 1, 14: lambda size: size}
# Points decoded per step: a header or chunk table that lies about the point count makes the decoder fail
# within one step instead of after a huge allocation.
READ_STEP = 1 << 20
_DAMAGED = "the file is damaged or truncated: copy or export it again"


def _check_signature(head: bytes, path: str) -> None:
    if len(head) < 227 or head[:4] != b"LASF":
        raise BadInputError("not a LAS/LAZ file (no 'LASF' signature at the start, or shorter than a LAS header)", path)
    major, minor = head[24], head[25]
    if (major, minor) not in SUPPORTED_VERSIONS:
        raise BadInputError(f"unsupported LAS version {major}.{minor} (pcseg reads LAS 1.0 to 1.4)", path)


def check_layout(f, size: int, path: str) -> None:
    """Check what the header, the VLRs, the EVLRs and (LAZ) the laszip VLR and chunk table promise against the
    file's size and against each other, before anything is decoded or allocated from them.

    The Rust LAZ decoder (lazrs) allocates what the chunk table says and aborts the whole process when that
    fails: 4 KB of zeros inserted in a real tile made it read a chunk count of billions and ask for 45 GB. A
    Python exception cannot stop an abort, so a damaged file must be refused before lazrs sees it.
    ``f`` is a seekable binary file of ``size`` bytes; raises :class:`BadInputError` naming the problem.
    """
    f.seek(0)
    head = f.read(375)
    _check_signature(head, path)
    minor = head[25]
    if len(head) < _MIN_HEADER[minor]:
        raise BadInputError(f"file is truncated inside its LAS 1.{minor} header ({size} bytes)", path)
    header_size, offset, n_vlrs = struct.unpack_from("<HII", head, 94)
    fmt_byte, record_length = head[104], struct.unpack_from("<H", head, 105)[0]
    # laspy's reading of the point format byte: bit 7 without bit 6 means LAZ, the low 6 bits are the format.
    compressed, fmt = bool(fmt_byte & 0x80) and not fmt_byte & 0x40, fmt_byte & 0x3F
    count = struct.unpack_from("<I", head, 107)[0]
    evlr_start = n_evlrs = 0
    if minor >= 4:  # laspy uses the 64-bit count of LAS 1.4
        evlr_start, n_evlrs, count = struct.unpack_from("<QIQ", head, 235)
    if header_size < _MIN_HEADER[minor]:
        raise BadInputError(f"header size {header_size} is smaller than a LAS 1.{minor} header "
                            f"({_MIN_HEADER[minor]} bytes); {_DAMAGED}", path)
    if offset < header_size:
        raise BadInputError(f"point data offset {offset} lies inside the {header_size}-byte header; {_DAMAGED}", path)
    if offset > size:
        raise BadInputError(f"file is truncated: the points start at byte {offset:,} but the file has {size:,} bytes",
                            path)
    if fmt >= len(_RECORD_SIZES):
        raise BadInputError(f"unknown point format {fmt} (LAS has 0 to 10); {_DAMAGED}", path)
    if record_length < _RECORD_SIZES[fmt]:
        raise BadInputError(f"point records of {record_length} bytes are shorter than point format {fmt} needs "
                            f"({_RECORD_SIZES[fmt]}); {_DAMAGED}", path)
    scales, offsets = struct.unpack_from("<3d", head, 131), struct.unpack_from("<3d", head, 155)
    # Coordinates are raw int32 * scale + offset: a zero scale puts every point on the offset, a huge scale or
    # offset overflows to infinity.
    if not all(s != 0 and math.isfinite(abs(s) * 2**31 + abs(o)) for s, o in zip(scales, offsets)):
        raise BadInputError(f"scale factors {list(scales)} or offsets {list(offsets)} are zero or not finite; "
                            f"{_DAMAGED}", path)
    laszip = _walk_vlrs(f, header_size, offset, n_vlrs, path)
    if count and not compressed:
        need = count * record_length
        if offset + need > size:
            raise BadInputError(f"file is truncated: the header declares {count:,} points of {record_length} bytes "
                                f"({need:,} bytes from byte {offset:,}) but {size - offset:,} bytes follow", path)
    if compressed:
        if laszip is None:
            raise BadInputError(f"the point format byte says LAZ-compressed but there is no laszip VLR; {_DAMAGED}",
                                path)
        if count:
            _check_chunk_table(f, size, offset, record_length, count, laszip, path)
    if n_evlrs:
        _walk_evlrs(f, size, evlr_start, n_evlrs, offset + (0 if compressed else count * record_length), path)


def _walk_vlrs(f, header_size: int, offset: int, n_vlrs: int, path: str) -> bytes | None:
    """Every VLR must fit between the header and the point data. Returns the laszip VLR's record (or None)."""
    room = offset - header_size
    if n_vlrs * 54 > room:
        raise BadInputError(f"the header declares {n_vlrs:,} VLRs, more than fit in the {room:,} bytes between the "
                            f"header and the point data; {_DAMAGED}", path)
    f.seek(header_size)
    block = f.read(room)
    pos, laszip = 0, None
    for i in range(n_vlrs):
        if pos + 54 > room:
            raise BadInputError(f"VLR {i} of {n_vlrs} starts past the start of the point data at byte {offset:,}; "
                                f"{_DAMAGED}", path)
        record_id, length = struct.unpack_from("<HH", block, pos + 18)
        if pos + 54 + length > room:
            raise BadInputError(f"VLR {i} (record {record_id}, {length} bytes) runs past the start of the point data "
                                f"at byte {offset:,}; {_DAMAGED}", path)
        if record_id == 22204 and block[pos + 2:pos + 18].rstrip(b"\0") == b"laszip encoded":
            laszip = block[pos + 54:pos + 54 + length]
        pos += 54 + length
    return laszip


def _walk_evlrs(f, size: int, start: int, n_evlrs: int, points_end: int, path: str) -> None:
    """LAS 1.4 EVLRs: after the points, inside the file, each of its declared length."""
    if start < points_end or start + 60 * n_evlrs > size:
        raise BadInputError(f"the header declares {n_evlrs:,} EVLRs from byte {start:,}, which do not fit between the "
                            f"points (up to byte {points_end:,}) and the end of the file ({size:,} bytes); {_DAMAGED}",
                            path)
    pos = start
    for i in range(n_evlrs):
        if pos + 60 > size:
            raise BadInputError(f"EVLR {i} of {n_evlrs} would start at byte {pos:,}, past the end of the file; "
                                f"{_DAMAGED}", path)
        f.seek(pos + 18)
        record_id, length = struct.unpack("<HQ", f.read(10))
        if pos + 60 + length > size:
            raise BadInputError(f"EVLR {i} (record {record_id}, {length:,} bytes at byte {pos:,}) runs past the end of "
                                f"the file ({size:,} bytes); {_DAMAGED}", path)
        pos += 60 + length


def _check_chunk_table(f, size: int, offset: int, record_length: int, count: int, laszip: bytes, path: str) -> None:
    """The laszip VLR against the header, then the chunk table: its offset inside the file, its chunk count
    against the point count, its entries (read only once their number is known to be small) against the
    compressed bytes, and in layered files each chunk's own point count and layer sizes."""
    import lazrs

    if len(laszip) < 34:
        raise BadInputError(f"the laszip VLR has {len(laszip)} bytes, fewer than its 34-byte header; {_DAMAGED}", path)
    compressor = struct.unpack_from("<H", laszip, 0)[0]
    chunk_size = struct.unpack_from("<I", laszip, 12)[0]
    n_items = struct.unpack_from("<H", laszip, 32)[0]
    if 34 + 6 * n_items > len(laszip):
        raise BadInputError(f"the laszip VLR lists {n_items} items but holds only {len(laszip)} bytes; {_DAMAGED}",
                            path)
    items = [struct.unpack_from("<HHH", laszip, 34 + 6 * i) for i in range(n_items)]
    item_bytes = sum(item_size for _, item_size, _ in items)
    if item_bytes != record_length:
        raise BadInputError(f"the laszip VLR describes {item_bytes}-byte points but the header says "
                            f"{record_length}-byte records; {_DAMAGED}", path)
    if compressor not in (2, 3):  # 2 point-wise chunked, 3 layered chunked: the two that lazrs decodes
        raise BadInputError(f"laszip compressor {compressor} is not one pcseg reads (2 point-wise, 3 layered "
                            "chunked); decompress the file with laszip or PDAL first", path)
    if chunk_size == 0:
        raise BadInputError(f"the laszip VLR gives a chunk size of 0 points; {_DAMAGED}", path)
    data_start = offset + 8
    if data_start > size:
        raise BadInputError("file is truncated: it ends before the LAZ chunk table offset", path)
    f.seek(offset)
    table_at = struct.unpack("<q", f.read(8))[0]
    if table_at == -1 and size >= 8:  # written by a stream that could not seek back: the offset ends the file
        f.seek(size - 8)
        table_at = struct.unpack("<q", f.read(8))[0]
    if not data_start <= table_at <= size - 8:
        raise BadInputError(f"the LAZ chunk table offset ({table_at:,}) points outside the compressed points "
                            f"(bytes {data_start:,} to {size:,}): bytes were inserted or removed, or the file is "
                            f"truncated; {_DAMAGED}", path)
    f.seek(table_at)
    version, n_chunks = struct.unpack("<II", f.read(8))
    if version != 0:
        raise BadInputError(f"no LAZ chunk table at byte {table_at:,} (version {version}, expected 0): bytes were "
                            f"inserted or removed; {_DAMAGED}", path)
    data_bytes = table_at - data_start
    variable = chunk_size == _VARIABLE_CHUNKS
    # Every chunk but a trailing empty one holds at least one point, and stores its first point uncompressed:
    # this bounds the chunk count by the bytes actually present, whatever the header claims.
    most = min(count, data_bytes // record_length) + 1
    if not 1 <= n_chunks <= most:
        raise BadInputError(f"the LAZ chunk table lists {n_chunks:,} chunks, but {count:,} points in {data_bytes:,} "
                            f"bytes of compressed points fit in 1 to {most:,}; {_DAMAGED}", path)
    need = -(-count // chunk_size)
    if not variable and not need <= n_chunks <= need + 1:
        raise BadInputError(f"the LAZ chunk table lists {n_chunks:,} chunks, but the header's {count:,} points in "
                            f"chunks of {chunk_size:,} need {need:,}; {_DAMAGED}", path)
    f.seek(table_at)
    try:
        with _rust_panics_quiet():
            entries = lazrs.read_chunk_table_only(io.BytesIO(f.read(size - table_at)), lazrs.LazVlr(laszip))
    except Exception as e:  # noqa: BLE001 - lazrs raises its own error types
        raise BadInputError(f"cannot read the LAZ chunk table ({_first_line(e)}); {_DAMAGED}", path) from None
    except BaseException as e:  # a Rust panic surfaces as pyo3's PanicException (not an Exception)
        if type(e).__name__ != "PanicException":
            raise
        raise BadInputError(f"cannot read the LAZ chunk table ({_first_line(e)}); {_DAMAGED}", path) from None
    byte_counts = [int(b) for _, b in entries]
    if variable:
        points = [int(p) for p, _ in entries]
        if sum(points) != count:
            raise BadInputError(f"the LAZ chunk table holds {sum(points):,} points but the header declares "
                                f"{count:,}; {_DAMAGED}", path)
    else:
        points = [min(chunk_size, max(0, count - i * chunk_size)) for i in range(len(entries))]
    if sum(byte_counts) != data_bytes:
        raise BadInputError(f"the LAZ chunks add up to {sum(byte_counts):,} bytes but the compressed points take "
                            f"{data_bytes:,} (bytes {data_start:,} to {table_at:,}): bytes were inserted or removed; "
                            f"{_DAMAGED}", path)
    short = next((i for i, (p, b) in enumerate(zip(points, byte_counts)) if p and b < record_length), None)
    if short is not None:
        raise BadInputError(f"LAZ chunk {short} has {points[short]:,} points in {byte_counts[short]} bytes, less than "
                            f"one uncompressed point; {_DAMAGED}", path)
    if compressor == 3 and all(t in _LAYERS for t, _, _ in items):
        n_layers = sum(_LAYERS[t](s) for t, s, _ in items)
        starts = data_start + np.concatenate([[0], np.cumsum(byte_counts[:-1], dtype=np.int64)])
        for i, (start, p, b) in enumerate(zip(starts.tolist(), points, byte_counts)):
            if not p:
                continue
            # a layered chunk: its first point uncompressed, its point count, the size of each layer, the layers
            n, total = 0, record_length + 4 + 4 * n_layers
            if b >= total:
                f.seek(start + record_length)
                n, *layers = struct.unpack(f"<I{n_layers}I", f.read(4 + 4 * n_layers))
                total += sum(layers)
            if n != p or total != b:
                raise BadInputError(f"LAZ chunk {i} at byte {start:,} is damaged (it says {n:,} points in {total:,} "
                                    f"bytes, the chunk table {p:,} points in {b:,} bytes); {_DAMAGED}", path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


@contextlib.contextmanager
def _quiet_laspy():
    """laspy logs what it then raises or works around (a failed LAZ backend, an ignored extra-bytes VLR) through
    logging's last-resort handler, i.e. as extra lines on stderr; pcseg reports problems in its own one-line
    errors, so laspy's records are dropped while pcseg reads."""
    log = logging.getLogger("laspy")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _rust_panics_quiet():
    """Corrupt compressed data can make lazrs panic; Rust's panic hook prints the panic on the process's stderr
    (two lines and a hint about RUST_BACKTRACE) before pyo3 raises PanicException, which pcseg reports in its own
    one line. Around lazrs calls, file descriptor 2 goes to a temporary file; what it caught is passed on
    unless a panic came."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2: nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        panicked = False
        try:
            yield
        except BaseException as e:
            panicked = type(e).__name__ == "PanicException"
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read()
            if text and not panicked:
                os.write(2, text)


def _decode_error(e: BaseException, path: str) -> BadInputError:
    return BadInputError(f"cannot read LAS/LAZ data ({_first_line(e)}); the file may be truncated or corrupt", path)


def _read_points(reader, path: str):
    """All points of an open laspy reader, decoded ``READ_STEP`` points at a time into one array.

    The array is allocated empty (the kernel commits its pages only as decoded points land in them), so a point
    count that the data does not back costs nothing before the decoder fails on it."""
    import laspy

    header = reader.header
    n = int(header.point_count)
    dtype = header.point_format.dtype()
    try:
        out, parts = np.empty(n, dtype), None
    except MemoryError:  # more than the address space allows: collect the steps, the decoder will tell
        out, parts = None, []
    done = 0
    while done < n:
        step = reader.read_points(min(READ_STEP, n - done)).array
        if len(step) == 0:
            break
        if out is not None:
            out[done:done + len(step)] = step
        else:
            parts.append(step)
        done += len(step)
    if done != n:
        raise BadInputError(f"file is truncated: header declares {n:,} points, {done:,} could be read", path)
    if out is None:
        out = np.concatenate(parts) if parts else np.empty(0, dtype)
    return laspy.ScaleAwarePointRecord(out, header.point_format, header.scales, header.offsets)


def _open(file: str, path: str):
    try:
        return open(file, "rb")
    except OSError as e:
        raise BadInputError(f"cannot open: {e.strerror}", path) from None


def read_las(data: bytes | str, path: str) -> "PointCloud":
    """Read a LAS/LAZ file (a path, or its bytes from stdin): the layout is checked first (`check_layout`),
    then the points are decoded in bounded steps."""
    import laspy

    f = _open(data, path) if isinstance(data, str) else io.BytesIO(data)
    with f:
        size = os.fstat(f.fileno()).st_size if isinstance(data, str) else len(data)
        check_layout(f, size, path)
        f.seek(0)
        try:
            with _quiet_laspy(), _rust_panics_quiet():
                reader = laspy.LasReader(f, closefd=False)
                record = _read_points(reader, path)
        except (BadInputError, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - laspy and lazrs raise many types for corrupt data
            raise _decode_error(e, path) from None
        except BaseException as e:  # a Rust panic in lazrs surfaces as pyo3's PanicException
            if type(e).__name__ != "PanicException":
                raise
            raise _decode_error(e, path) from None
    return _cloud_from_points(record, reader.header, path)


def _cloud_from_points(points, header, path: str) -> "PointCloud":
    """A PointCloud of a laspy point record: float64 xyz, every dimension as its raw stored values."""
    from .cloud import PointCloud

    raw = points.array
    xyz = np.stack([raw[d].astype(np.float64) * header.scales[i] + header.offsets[i]
                    for i, d in enumerate(_XYZ)], axis=1)
    fields: dict[str, np.ndarray] = {}
    for dim in header.point_format.dimensions:
        if dim.name in _XYZ:
            continue
        if dim.name in raw.dtype.names:  # stored as its own field: take the raw stored values
            fields[dim.name] = np.array(raw[dim.name])
        else:  # bit field packed in a byte
            fields[dim.name] = np.array(points[dim.name])
    meta = {"format": "laz" if header.are_points_compressed else "las", "las_header": copy.deepcopy(header)}
    return PointCloud(xyz, fields, meta)


def las_point_count(path: str) -> int:
    """The point count of a LAS/LAZ file's header, once `check_layout` has accepted the file.

    Opening a damaged file with laspy just to read its count is not safe: laspy reads every VLR and EVLR the
    header declares, and a damaged count of 39 million EVLRs keeps it looping for hours."""
    with _open(path, path) as f:
        size = os.fstat(f.fileno()).st_size
        check_layout(f, size, path)
        f.seek(0)
        head = f.read(375)
    return struct.unpack_from("<Q", head, 247)[0] if head[25] >= 4 else struct.unpack_from("<I", head, 107)[0]


def iter_las_chunks(path: str, chunk_size: int = 1_000_000):
    """Stream a LAS/LAZ file: yields (index of the chunk's first point, PointCloud of the chunk)."""
    import laspy

    with _open(path, path) as f:
        check_layout(f, os.fstat(f.fileno()).st_size, path)
    try:
        with _quiet_laspy(), laspy.open(path) as reader:
            start, chunks = 0, iter(reader.chunk_iterator(chunk_size))
            while True:
                with _rust_panics_quiet():  # around the decoding only: the caller may print between chunks
                    points = next(chunks, None)
                if points is None:
                    break
                cloud = _cloud_from_points(points, reader.header, path)
                yield start, cloud
                start += len(cloud)
    except (BadInputError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001
        raise _decode_error(e, path) from None
    except BaseException as e:
        if type(e).__name__ != "PanicException":
            raise
        raise _decode_error(e, path) from None


def _new_header(cloud) -> "laspy.LasHeader":
    import laspy

    has_rgb = all(c in cloud.fields for c in ("red", "green", "blue"))
    header = laspy.LasHeader(version="1.4", point_format=7 if has_rgb else 6)
    lo = np.floor(cloud.xyz.min(axis=0)) if len(cloud) else np.zeros(3)
    header.offsets = lo
    extent = (cloud.xyz.max(axis=0) - lo) if len(cloud) else np.zeros(3)
    # 1 mm resolution unless the extent would not fit in int32 (2147 km at 1 mm).
    header.scales = np.where(extent / 0.001 < 2**31 - 1, 0.001, 0.01)
    return header


def _fit_standard(name: str, values: np.ndarray, dim, path: str) -> np.ndarray:
    """Values for a standard LAS dimension, checked against what the dimension can hold."""
    values = np.asarray(values)
    if dim.kind.name == "FloatingPoint":
        return values.astype(np.float64)
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise BadInputError(f"field {name!r} has non-integer values and cannot be stored in LAS dimension {name}", path)
    bits = dim.num_bits
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if dim.kind.name == "SignedInteger" else (0, 2**bits - 1)
    if len(values) and (values.min() < lo or values.max() > hi):
        raise BadInputError(f"field {name!r} has values in [{values.min()}, {values.max()}] that do not fit LAS "
                            f"dimension {name} ({lo}..{hi})", path)
    return values


def output_header(cloud, fields: dict[str, np.dtype], path: str) -> tuple["laspy.LasHeader", list[str]]:
    """The header to write: the input's own (a deep copy) or a new LAS 1.4 one, plus extra-bytes dimensions
    for fields the point format does not have. Returns it with notes for the user."""
    import laspy

    notes: list[str] = []
    header = cloud.meta.get("las_header")
    header = copy.deepcopy(header) if header is not None else _new_header(cloud)
    std = {d.name for d in header.point_format.dimensions}
    new_dims = []
    for name, dt in fields.items():
        if name in std or name.lower() in ("x", "y", "z"):
            continue
        dt = np.dtype("u1") if np.dtype(dt) == np.bool_ else np.dtype(dt)
        if dt not in _LAS_EB_TYPES:
            raise BadInputError(f"field {name!r} of type {dt} cannot be stored in LAS extra bytes", path)
        if len(name.encode()) > 32:
            raise BadInputError(f"field name {name!r} is longer than the 32 bytes LAS allows", path)
        new_dims.append(laspy.ExtraBytesParams(name=name, type=dt))
    if new_dims:
        header.add_extra_dims(new_dims)
        notes.append("new fields stored as LAS extra bytes: " + ", ".join(d.name for d in new_dims))
    return header, notes


def fill_record(header, cloud, path: str):
    """A laspy point record of ``cloud`` under ``header`` (raw X/Y/Z from the header's scales and offsets)."""
    import laspy

    record = laspy.ScaleAwarePointRecord.zeros(len(cloud), header=header)
    scales, offsets = np.asarray(header.scales), np.asarray(header.offsets)
    raw_xyz = np.round((cloud.xyz - offsets) / scales)
    if len(cloud) and (raw_xyz.min() < -(2**31) or raw_xyz.max() > 2**31 - 1):
        raise BadInputError("coordinates do not fit the LAS scale/offset of this header (int32 overflow)", path)
    arr = record.array
    for i, d in enumerate(_XYZ):
        arr[d] = raw_xyz[:, i].astype(np.int32)
    std = {d.name: d for d in header.point_format.dimensions}
    for name, values in cloud.fields.items():
        if name.lower() in ("x", "y", "z"):
            continue
        dim = std[name]
        if not dim.is_standard:
            # .base: an extra-bytes array dimension (n values per point) has a sub-array dtype
            arr[name] = np.asarray(values).astype(arr.dtype[name].base, copy=False)
        elif name in arr.dtype.names:
            arr[name] = _fit_standard(name, values, dim, path).astype(arr.dtype[name], copy=False)
        else:
            record[name] = _fit_standard(name, values, dim, path)
    return record


def write_las(cloud, dest, compressed: bool, path: str) -> list[str]:
    """Write ``cloud`` as LAS (or LAZ) to the binary stream ``dest``. Returns notes about converted fields."""
    import laspy

    from .cloud import PointCloud
    from .simple import flat_fields

    source = cloud.meta.get("las_header")
    dims = {d.name for d in source.point_format.dimensions} if source is not None else set()
    # an array field the header already has (an extra-bytes array) stays one; a new one becomes one dimension
    # per value, since LAS extra bytes hold arrays of at most 3
    cloud = PointCloud(cloud.xyz, flat_fields(cloud.fields, keep=dims), cloud.meta)
    header, notes = output_header(cloud, {k: np.asarray(v).dtype for k, v in cloud.fields.items()}, path)
    las = laspy.LasData(header=header, points=fill_record(header, cloud, path))
    try:
        las.write(dest, do_compress=compressed)
    except Exception as e:
        raise BadInputError(f"cannot write LAS data: {e}", path) from None
    return notes


def las_version(header) -> str:
    return f"{header.version.major}.{header.version.minor}"


def las_crs(header) -> str | None:
    """A short description of the CRS held in the VLRs (WKT name and EPSG code, or GeoTIFF EPSG), or None.

    Parsed from the VLR text itself so that no projection library (pyproj) is needed.
    """
    for vlr in list(header.vlrs) + list(header.evlrs or []):
        if vlr.record_id == 2112:  # OGC coordinate system WKT
            text = getattr(vlr, "string", None)
            if text is None:
                text = bytes(getattr(vlr, "record_data", b"")).decode("latin-1")
            text = text.strip("\x00 ")
            name = re.match(r'\s*\w+\["([^"]*)"', text)
            # The CRS's own code is the AUTHORITY that closes the outermost bracket (inner ones name units, datums).
            code = re.search(r'AUTHORITY\["EPSG",\s*"?(\d+)"?\]\]\s*$', text)
            label = name.group(1) if name else "WKT"
            return f"{label} (EPSG:{code.group(1)})" if code else label
    for vlr in header.vlrs:
        if vlr.record_id == 34735:  # GeoKeyDirectory
            for key in getattr(vlr, "geo_keys", []):
                if key.id in (3072, 2048) and key.value_offset not in (0, 32767):  # Projected / Geographic CS type
                    return f"EPSG:{key.value_offset}"
            return "GeoTIFF keys (user-defined)"
    return None


__all__ = ["read_las", "write_las", "las_version", "las_crs", "las_point_count", "check_layout", "SUPPORTED_VERSIONS"]
