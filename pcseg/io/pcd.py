"""PCD (Point Cloud Library) reader and writer in numpy: ascii, binary and binary_compressed (LZF).

Organised clouds mark missing returns with NaN coordinates; those points are dropped on reading (the count is
kept in ``meta["pcd_dropped"]``).
"""
from __future__ import annotations

import numpy as np

from ..errors import BadInputError

_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8",
          ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8"}


def lzf_decompress(src: bytes, size: int) -> bytes:
    """LZF decompression (liblzf format as used by PCL's binary_compressed)."""
    out = bytearray(size)
    ip = op = 0
    n = len(src)
    while ip < n:
        ctrl = src[ip]
        ip += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            length = ctrl + 1
            if ip + length > n or op + length > size:
                raise ValueError("corrupt LZF literal run")
            out[op:op + length] = src[ip:ip + length]
            ip += length
            op += length
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                length += src[ip]
                ip += 1
            ref = op - ((ctrl & 0x1F) << 8) - src[ip] - 1
            ip += 1
            length += 2
            if ref < 0 or op + length > size:
                raise ValueError("corrupt LZF back reference")
            if ref + length <= op:
                out[op:op + length] = out[ref:ref + length]
            else:  # overlapping copy repeats the pattern
                for k in range(length):
                    out[op + k] = out[ref + k]
            op += length
    if op != size:
        raise ValueError(f"LZF data decompressed to {op} bytes, expected {size}")
    return bytes(out)


def _parse_header(data: bytes, path: str):
    header, pos = {}, 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise BadInputError("PCD header is incomplete (no DATA line)", path)
        line = data[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        header[key.upper()] = value.split()
        if key.upper() == "DATA":
            return header, pos


def read_pcd(data: bytes, path: str):
    from .cloud import PointCloud

    if not (data.startswith(b"#") or data.startswith(b"VERSION") or data.startswith(b"FIELDS")):
        raise BadInputError("not a PCD file (no PCD header)", path)
    header, pos = _parse_header(data, path)
    try:
        names = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = header["TYPE"]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        npts = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        kind = header["DATA"][0].lower()
    except (KeyError, ValueError, IndexError):
        raise BadInputError("PCD header lacks FIELDS/SIZE/TYPE/POINTS or has malformed values", path) from None
    cols = []
    for name, size, typ, count in zip(names, sizes, types, counts):
        if (typ, size) not in _TYPES:
            raise BadInputError(f"PCD field {name!r} has unsupported TYPE {typ} SIZE {size}", path)
        cols.append((name, _TYPES[(typ, size)], (count,)) if count > 1 else (name, _TYPES[(typ, size)]))
    dtype = np.dtype(cols)
    body = data[pos:]
    try:
        if kind == "ascii":
            flat = np.array(body.split(), dtype=np.float64)
            ncol = sum(counts)
            table = flat[: npts * ncol].reshape(-1, ncol)
            arr = np.empty(len(table), dtype=dtype)
            c = 0
            for name, count in zip(names, counts):
                arr[name] = table[:, c] if count == 1 else table[:, c:c + count]
                c += count
        elif kind == "binary":
            arr = np.frombuffer(body, dtype=dtype, count=npts)
        elif kind == "binary_compressed":
            csize, usize = np.frombuffer(body[:8], dtype="<u4")
            raw = lzf_decompress(body[8:8 + int(csize)], int(usize))
            # Column-major: all values of the first field, then the second, ...
            arr = np.empty(npts, dtype=dtype)
            off = 0
            for name, size, count in zip(names, sizes, counts):
                nbytes = size * count * npts
                arr[name] = np.frombuffer(raw[off:off + nbytes], dtype=dtype[name].base).reshape(arr[name].shape)
                off += nbytes
        else:
            raise BadInputError(f"unknown PCD DATA kind {kind!r}", path)
    except BadInputError:
        raise
    except Exception as e:
        raise BadInputError(f"cannot decode PCD {kind} data ({e}); the file may be truncated", path) from None
    if len(arr) != npts:
        raise BadInputError(f"file is truncated: header declares {npts} points, {len(arr)} present", path)
    for c in ("x", "y", "z"):
        if c not in names:
            raise BadInputError(f"PCD file has no {c!r} field", path)
    xyz = np.stack([arr[c].astype(np.float64) for c in ("x", "y", "z")], axis=1)
    valid = np.isfinite(xyz).all(axis=1)
    fields = {}
    for name in names:
        if name in ("x", "y", "z", "_"):
            continue
        v = np.array(arr[name][valid])
        if name == "rgba" or name == "rgb":  # packed colour: split into channels
            packed = v.view("<u4") if v.dtype.itemsize == 4 else v.astype("<u4")
            fields["red"] = ((packed >> 16) & 255).astype(np.uint8)
            fields["green"] = ((packed >> 8) & 255).astype(np.uint8)
            fields["blue"] = (packed & 255).astype(np.uint8)
            if name == "rgba":
                fields["alpha"] = ((packed >> 24) & 255).astype(np.uint8)
        else:
            fields[name] = v
    meta = {"format": "pcd", "pcd_dropped": int((~valid).sum()), "pcd_viewpoint": header.get("VIEWPOINT")}
    return PointCloud(xyz[valid], fields, meta)


def write_pcd(cloud, dest, path: str) -> list[str]:
    """Binary PCD v0.7, unorganised; x, y, z as float64 (F 8) so nothing is lost, fields with their types."""
    rev = {np.dtype(v): k for k, v in _TYPES.items()}
    cols = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    notes = []
    for n, v in cloud.fields.items():
        dt = np.asarray(v).dtype
        if dt == np.bool_:
            dt = np.dtype("u1")
        if np.dtype(dt).newbyteorder("<") not in rev and dt not in rev:
            notes.append(f"field {n!r} ({dt}) stored as F 8")
            dt = np.dtype("<f8")
        cols.append((n, np.dtype(dt).newbyteorder("<") if dt.itemsize > 1 else dt))
    arr = np.empty(len(cloud), dtype=cols)
    for i, c in enumerate("xyz"):
        arr[c] = cloud.xyz[:, i]
    for n, v in cloud.fields.items():
        arr[n] = v
    types = [rev.get(np.dtype(arr.dtype[n])) for n in arr.dtype.names]
    head = ["# .PCD v0.7 - Point Cloud Data file format (written by pcseg)", "VERSION 0.7",
            "FIELDS " + " ".join(arr.dtype.names), "SIZE " + " ".join(str(t[1]) for t in types),
            "TYPE " + " ".join(t[0] for t in types), "COUNT " + " ".join("1" for _ in types),
            f"WIDTH {len(arr)}", "HEIGHT 1", "VIEWPOINT " + " ".join(cloud.meta.get("pcd_viewpoint") or
                                                                      ["0", "0", "0", "1", "0", "0", "0"]),
            f"POINTS {len(arr)}", "DATA binary"]
    dest.write(("\n".join(head) + "\n").encode("ascii"))
    dest.write(arr.tobytes())
    return notes
