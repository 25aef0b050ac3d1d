"""Bad input: one line naming the file and the problem, exit code 3 (2 for usage), no traceback, no output left,
and the input file unchanged.

Damaged files are made from real ones (the repository's IGN LiDAR HD tile, ../shared/data) by changing the bytes
that a reader trusts: counts, offsets, sizes, types.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import sys
import time

import numpy as np
import pytest

from pcseg.cli.main import main

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ign_lidarhd_77060_627760.laz")


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code, err, expected_code, *needles):
    assert code == expected_code, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in err.lower(), (n, err)


def make_bad(tmp_path, name, content: bytes):
    p = tmp_path / name
    p.write_bytes(content)
    return str(p)


def _digest(path: str) -> str | None:
    return hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.isfile(path) else None


def fails(capsys, tmp_path, argv, src, expected_code, *needles, out=None):
    """Run the CLI, expect a one-line error; the input stays as it was and no output or temporary file is left."""
    before = _digest(src)
    code, err = run(capsys, *argv)
    assert_one_line_error(code, err, expected_code, *needles)
    assert _digest(src) == before, "the input file was modified"
    if out is not None:
        assert not os.path.exists(out)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".pcseg-")]
    return err


def convert_fails(capsys, tmp_path, src, expected_code, *needles, extra=()):
    out = str(tmp_path / "out.ply")
    return fails(capsys, tmp_path, ["convert", src, "-o", out, *extra], src, expected_code, *needles, out=out)


def info_fails(capsys, tmp_path, src, expected_code, *needles, extra=()):
    return fails(capsys, tmp_path, ["info", src, *extra], src, expected_code, *needles)


def patched(data: bytes, pos: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


def laszip_record(data: bytes) -> int:
    """Where the laszip VLR's record starts."""
    header_size, _, n_vlrs = struct.unpack_from("<HII", data, 94)
    pos = header_size
    for _ in range(n_vlrs):
        record_id, length = struct.unpack_from("<HH", data, pos + 18)
        if record_id == 22204:
            return pos + 54
        pos += 54 + length
    raise AssertionError("no laszip VLR")


def chunk_table(data: bytes) -> int:
    return struct.unpack_from("<q", data, struct.unpack_from("<I", data, 96)[0])[0]


@pytest.fixture(scope="module")
def laz() -> bytes:
    return open(EXAMPLE, "rb").read()


# --- LAS / LAZ ---------------------------------------------------------------------------------------------
def test_truncated_laz(capsys, tmp_path):
    data = open(EXAMPLE, "rb").read()
    src = make_bad(tmp_path, "cut.laz", data[: len(data) // 2])
    convert_fails(capsys, tmp_path, src, 3, "cut.laz", "truncated")


def test_truncated_las(capsys, tmp_path, als_files):
    las = next(p for p in als_files if p.suffix == ".las")
    data = las.read_bytes()
    src = make_bad(tmp_path, "cut.las", data[: len(data) - 1000])
    convert_fails(capsys, tmp_path, src, 3, "cut.las")


def test_wrong_magic_las(capsys, tmp_path):
    src = make_bad(tmp_path, "fake.las", b"NOTLAS" + b"\0" * 400)
    convert_fails(capsys, tmp_path, src, 3, "fake.las", "LASF")


def test_unsupported_las_version(capsys, tmp_path):
    data = bytearray(open(EXAMPLE, "rb").read())
    data[24], data[25] = 2, 0  # LAS 2.0
    src = make_bad(tmp_path, "v20.laz", bytes(data))
    convert_fails(capsys, tmp_path, src, 3, "v20.laz", "unsupported LAS version 2.0")


@pytest.mark.parametrize("command", ["info", "convert"])
def test_laz_with_zeros_inserted_mid_file(capsys, tmp_path, laz, command):
    """Issue #14 part 4: 4 KB of zeros in the middle of a real tile moved the chunk table; lazrs read a chunk
    count of billions from the wrong bytes and aborted the process (SIGABRT, 'memory allocation of 45154921904
    bytes failed'). Now refused from the layout, quickly, before lazrs sees the file."""
    mid = len(laz) // 2
    src = make_bad(tmp_path, "zeros.laz", laz[:mid] + bytes(4096) + laz[mid:])
    t0 = time.perf_counter()
    if command == "info":
        info_fails(capsys, tmp_path, src, 3, "zeros.laz", "chunk table", "inserted or removed")
    else:
        convert_fails(capsys, tmp_path, src, 3, "zeros.laz", "chunk table", "inserted or removed")
    assert time.perf_counter() - t0 < 5


def test_laz_chunk_count_of_billions(capsys, tmp_path, laz):
    src = make_bad(tmp_path, "chunks.laz", patched(laz, chunk_table(laz) + 4, "<I", 2**31 - 1))
    info_fails(capsys, tmp_path, src, 3, "2,147,483,647 chunks")


def test_laz_chunk_table_offset_past_the_end(capsys, tmp_path, laz):
    src = make_bad(tmp_path, "offset.laz", patched(laz, 1947, "<q", len(laz) + 1000))
    info_fails(capsys, tmp_path, src, 3, "chunk table offset")


def test_laz_without_laszip_vlr(capsys, tmp_path, laz):
    src = make_bad(tmp_path, "novlr.laz", patched(laz, laszip_record(laz) - 54 + 18, "<H", 1))
    info_fails(capsys, tmp_path, src, 3, "no laszip VLR")


def test_laz_record_length_disagrees_with_laszip_items(capsys, tmp_path, laz):
    src = make_bad(tmp_path, "reclen.laz", patched(laz, 105, "<H", 40))
    info_fails(capsys, tmp_path, src, 3, "laszip VLR describes 38-byte points", "40-byte records")


def test_laz_point_count_beyond_its_chunks(capsys, tmp_path, laz):
    src = make_bad(tmp_path, "count.laz", patched(laz, 247, "<Q", 10**12))  # LAS 1.4 point count
    info_fails(capsys, tmp_path, src, 3, "chunks")


def test_laz_layer_size_damaged(capsys, tmp_path, laz):
    """A layered (LAS 1.4) chunk starts with its first point, its point count and the size of each layer:
    a wrong layer size would make the decoder allocate it."""
    first_layer = 1947 + 8 + 38 + 4  # point data, chunk table offset, raw first point, point count
    old = struct.unpack_from("<I", laz, first_layer)[0]
    src = make_bad(tmp_path, "layer.laz", patched(laz, first_layer, "<I", old + 2**30))
    info_fails(capsys, tmp_path, src, 3, "chunk 0", "damaged")


def test_laz_unsupported_compressor(capsys, tmp_path, laz):
    src = make_bad(tmp_path, "comp.laz", patched(laz, laszip_record(laz), "<H", 1))
    info_fails(capsys, tmp_path, src, 3, "compressor 1")


def test_laz_with_corrupt_compressed_points(capfd, tmp_path, shared_data):
    """A layout that checks out but corrupt compressed bytes (5 KB copied inside the points): lazrs panics while
    decoding, and Rust prints the panic on the process's stderr (descriptor 2, hence capfd) before Python sees
    it. Still one line, exit 3."""
    data = (shared_data / "als" / "ign_crop_duplicate_bridge.laz").read_bytes()
    piece = data[2281:7522]
    src = make_bad(tmp_path, "panic.laz", (data[:4531] + piece + data[4531 + len(piece):])[:len(data)])
    convert_fails(capfd, tmp_path, src, 3, "panic.laz", "PanicException", "corrupt")


def test_damaged_laz_on_stdin(capsys, tmp_path, monkeypatch, laz):
    """The same check on bytes read from standard input."""
    mid = len(laz) // 2
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(laz[:mid] + bytes(3000) + laz[mid:])))
    code, err = run(capsys, "info", "-", "--format", "laz")
    assert_one_line_error(code, err, 3, "<stdin>", "chunk table")


# One patched header field of a real LAS file each: (file, name, byte offset, struct format, value, command,
# what the one-line error must say). warsaw_small.las is LAS 1.2 with 3000 points of point format 3 (34 bytes)
# and one VLR right after its 227-byte header; ign_patchwork_donor.las is LAS 1.4 (375-byte header).
LAS_HEADER_DAMAGE = [
    ("warsaw_small.las", "count.las", 107, "<I", 3_000_000, "convert", ("truncated", "3,000,000 points")),
    ("warsaw_small.las", "scale.las", 131, "<d", 0.0, "convert", ("scale factors",)),
    ("warsaw_small.las", "short.las", 105, "<H", 20, "info", ("shorter than point format 3",)),
    ("warsaw_small.las", "vlr.las", 227 + 20, "<H", 60000, "info", ("VLR 0", "point data")),
    ("warsaw_small.las", "offset.las", 96, "<I", None, "info", ("truncated", "points start at byte")),
    ("warsaw_small.las", "fmt.las", 104, "<B", 12, "info", ("unknown point format 12",)),
    ("ign_patchwork_donor.las", "head.las", 94, "<H", 227, "info", ("header size 227", "LAS 1.4")),
]


@pytest.mark.parametrize("file,name,pos,fmt,value,command,needles", LAS_HEADER_DAMAGE,
                         ids=[case[1] for case in LAS_HEADER_DAMAGE])
def test_las_damaged_header_field(capsys, tmp_path, shared_data, file, name, pos, fmt, value, command, needles):
    data = (shared_data / "als" / file).read_bytes()
    value = len(data) + 10 if value is None else value  # None: the point data offset past the end of the file
    src = make_bad(tmp_path, name, patched(data, pos, fmt, value))
    (convert_fails if command == "convert" else info_fails)(capsys, tmp_path, src, 3, *needles)


def test_las_evlr_past_the_end(capsys, tmp_path, shared_data):
    import laspy

    las = laspy.read(shared_data / "als" / "ign_patchwork_donor.las")
    wkt = [v for v in las.header.vlrs if v.record_id == 2112]
    for v in wkt:
        las.header.vlrs.remove(v)
    las.header.evlrs.extend(wkt)  # the CRS as an EVLR, after the points (LAS 1.4)
    buf = io.BytesIO()
    las.write(buf)
    data = buf.getvalue()
    start = struct.unpack_from("<Q", data, 235)[0]
    src = make_bad(tmp_path, "evlr.las", patched(data, start + 20, "<Q", 2**40))
    convert_fails(capsys, tmp_path, src, 3, "EVLR 0", "past the end")


# --- PLY ---------------------------------------------------------------------------------------------------
_PLY_HEAD = (b"ply\nformat binary_little_endian 1.0\nelement vertex %d\nproperty float x\nproperty float y\n"
             b"property float z\nend_header\n")
_PLY_ASCII = _PLY_HEAD.replace(b"binary_little_endian", b"ascii")


def test_wrong_magic_ply(capsys, tmp_path):
    src = make_bad(tmp_path, "fake.ply", b"this is not a ply\n" * 10)
    convert_fails(capsys, tmp_path, src, 3, "fake.ply", "ply")


def test_truncated_ply(capsys, tmp_path):
    src = make_bad(tmp_path, "short.ply", _PLY_HEAD % 100 + np.zeros(50 * 3, "<f4").tobytes())
    convert_fails(capsys, tmp_path, src, 3, "short.ply", "truncated")


def test_ply_vertex_count_of_a_trillion(capsys, tmp_path):
    """Refused from the header and the file size, before plyfile allocates arrays of the declared size."""
    src = make_bad(tmp_path, "huge.ply", _PLY_HEAD % 10**12 + np.zeros(30, "<f4").tobytes())
    t0 = time.perf_counter()
    convert_fails(capsys, tmp_path, src, 3, "truncated", "1,000,000,000,000 vertex")
    assert time.perf_counter() - t0 < 5


def test_ply_ascii_with_fewer_lines_than_vertices(capsys, tmp_path):
    src = make_bad(tmp_path, "few.ply", _PLY_ASCII % 5 + b"1 2 3\n4 5 6\n")
    convert_fails(capsys, tmp_path, src, 3, "truncated")


def test_empty_cloud(capsys, tmp_path):
    src = make_bad(tmp_path, "empty.ply", _PLY_ASCII % 0)
    convert_fails(capsys, tmp_path, src, 3, "empty.ply", "no points")


def test_ply_without_xyz(capsys, tmp_path):
    src = make_bad(tmp_path, "noxyz.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n")
    convert_fails(capsys, tmp_path, src, 3, "noxyz.ply", "no x")


def test_ply_vertex_list_property(capsys, tmp_path):
    head = (_PLY_ASCII % 1).replace(b"end_header", b"property list uchar int ids\nend_header")
    src = make_bad(tmp_path, "list.ply", head + b"1 2 3 2 7 8\n")
    convert_fails(capsys, tmp_path, src, 3, "list properties", "ids")


def test_ply_without_vertex_element(capsys, tmp_path):
    src = make_bad(tmp_path, "faces.ply", b"ply\nformat ascii 1.0\nelement face 1\n"
                                          b"property list uchar int vertex_indices\nend_header\n3 0 1 2\n")
    convert_fails(capsys, tmp_path, src, 3, "no 'vertex' element")


def test_ply_unknown_encoding(capsys, tmp_path):
    src = make_bad(tmp_path, "enc.ply", _PLY_HEAD.replace(b"binary_little_endian", b"binary_middle_endian") % 1
                   + np.zeros(3, "<f4").tobytes())
    convert_fails(capsys, tmp_path, src, 3, "enc.ply", "cannot read PLY data")


# --- PCD ---------------------------------------------------------------------------------------------------
def _pcd(fields=b"x y z", size=b"4 4 4", type_=b"F F F", count=b"1 1 1", points=2, kind=b"binary") -> bytes:
    return (b"# .PCD v0.7\nVERSION 0.7\nFIELDS " + fields + b"\nSIZE " + size + b"\nTYPE " + type_ + b"\nCOUNT "
            + count + b"\nWIDTH %d\nHEIGHT 1\nPOINTS %d\nDATA " % (points, points) + kind + b"\n")


def test_pcd_garbage(capsys, tmp_path):
    src = make_bad(tmp_path, "bad.pcd", b"VERSION 0.7\nFIELDS x y z\n")
    convert_fails(capsys, tmp_path, src, 3, "bad.pcd", "header")


def test_pcd_binary_truncated(capsys, tmp_path):
    src = make_bad(tmp_path, "cut.pcd", _pcd(points=1000) + np.zeros((10, 3), "<f4").tobytes())
    convert_fails(capsys, tmp_path, src, 3, "truncated", "1,000 points")


@pytest.mark.parametrize("header,message", [
    ({"size": b"4 4"}, "3 FIELDS but 2 SIZE"),                          # fields and sizes disagree
    ({"fields": b"x y x"}, "twice"),                                    # a field named twice
    ({"size": b"4 4 2"}, "unsupported TYPE F SIZE 2"),                  # no such float type
    ({"kind": b"binary_zipped"}, "unknown PCD DATA kind"),
    ({"count": b"1 1 2147483648"}, "COUNT 1 1 2147483648"),             # a count of billions
], ids=["sizes", "twice", "type", "kind", "count"])
def test_pcd_header_that_the_data_cannot_match(capsys, tmp_path, header, message):
    src = make_bad(tmp_path, "bad.pcd", _pcd(**header) + np.zeros((2, 3), "<f4").tobytes())
    convert_fails(capsys, tmp_path, src, 3, message)


def test_pcd_compressed_size_that_no_data_can_give(capsys, tmp_path):
    """A million points from 10 compressed bytes: refused before allocating the 12 MB it would decompress to."""
    src = make_bad(tmp_path, "lzf.pcd", _pcd(points=10**6, kind=b"binary_compressed")
                   + struct.pack("<II", 10, 12 * 10**6) + bytes(10))
    convert_fails(capsys, tmp_path, src, 3, "cannot expand")


def test_pcd_ascii_label_that_is_not_an_integer(capsys, tmp_path):
    src = make_bad(tmp_path, "label.pcd", _pcd(b"x y z label", b"4 4 4 4", b"F F F U", b"1 1 1 1", kind=b"ascii")
                   + b"1 2 3 4\n5 6 7 8.5\n")
    convert_fails(capsys, tmp_path, src, 3, "'label'", "not integers")


# --- KITTI .bin, .npy, text --------------------------------------------------------------------------------
def test_empty_bin(capsys, tmp_path):
    src = make_bad(tmp_path, "empty.bin", b"")
    convert_fails(capsys, tmp_path, src, 3, "empty.bin", "no points")


def test_inf_coordinates(capsys, tmp_path):
    pts = np.array([[0, 0, 0, 1], [np.inf, 0, 0, 1]], dtype="<f4")
    src = make_bad(tmp_path, "inf.bin", pts.tobytes())
    convert_fails(capsys, tmp_path, src, 3, "inf.bin", "infinite")


def test_bin_size_not_multiple_of_row(capsys, tmp_path):
    src = make_bad(tmp_path, "odd.bin", b"\0" * 18)
    convert_fails(capsys, tmp_path, src, 3, "odd.bin", "multiple")


def test_bin_column_spec_without_z(capsys, tmp_path, shared_data):
    scan = (shared_data / "kitti" / "training" / "velodyne" / "000000.bin").read_bytes()[: 16 * 500]
    src = make_bad(tmp_path, "scan.bin", scan)
    convert_fails(capsys, tmp_path, src, 3, "no 'z' column", extra=("--columns", "x,y,intensity,ring"))


def test_bin_with_two_columns(capsys, tmp_path):
    src = make_bad(tmp_path, "two.bin", np.zeros((4, 2), "<f4").tobytes())
    convert_fails(capsys, tmp_path, src, 3, "at least 3", extra=("--columns", "2"))


def test_label_count_mismatch(capsys, tmp_path):
    src = make_bad(tmp_path, "scan.bin", np.zeros((10, 4), "<f4").tobytes())
    labels = make_bad(tmp_path, "scan.label", np.zeros(9, "<u4").tobytes())
    from pcseg.errors import BadInputError
    from pcseg.io import read

    with pytest.raises(BadInputError, match="9 labels for 10 points"):
        read(src, labels=labels)


def test_npy_wrong_shape(capsys, tmp_path):
    p = tmp_path / "flat.npy"
    np.save(p, np.zeros(10))
    convert_fails(capsys, tmp_path, str(p), 3, "flat.npy", "shape")


def test_npy_of_strings(capsys, tmp_path):
    p = tmp_path / "words.npy"
    np.save(p, np.array([["1", "2", "3"], ["4", "5", "6"]]))
    convert_fails(capsys, tmp_path, str(p), 3, "array of numbers", "<U1")


def test_npy_of_objects_is_not_unpickled(capsys, tmp_path):
    p = tmp_path / "objects.npy"
    np.save(p, np.array([[1, 2, 3], [4, 5, None]], dtype=object), allow_pickle=True)
    convert_fails(capsys, tmp_path, str(p), 3, "cannot read .npy data", "pickle")


def test_npy_shape_larger_than_its_data(capsys, tmp_path, shared_data):
    """numpy allocates the declared array before reading: refused from the header and the file size."""
    pts = np.load(shared_data / "lidarseg" / "xyz_only" / "semkitti_000700_points.npy")[:100]
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": pts.dtype.str, "fortran_order": False, "shape": (10**11, 3)})
    src = make_bad(tmp_path, "big.npy", buf.getvalue() + pts.tobytes())
    t0 = time.perf_counter()
    convert_fails(capsys, tmp_path, src, 3, "truncated", "(100000000000, 3)")
    assert time.perf_counter() - t0 < 5


def test_npy_structured_without_z(capsys, tmp_path):
    arr = np.zeros(5, dtype=[("x", "<f4"), ("y", "<f4"), ("label", "<i4")])
    p = tmp_path / "noz.npy"
    np.save(p, arr)
    convert_fails(capsys, tmp_path, str(p), 3, "no z field")


def test_nan_coordinates(capsys, tmp_path):
    src = make_bad(tmp_path, "nan.xyz", b"1 2 3\nnan 2 3\n4 5 6\n")
    convert_fails(capsys, tmp_path, src, 3, "nan.xyz", "NaN")


def test_text_ragged_rows(capsys, tmp_path):
    src = make_bad(tmp_path, "ragged.txt", b"1 2 3 4\n5 6 7\n")
    convert_fails(capsys, tmp_path, src, 3, "ragged.txt", "columns")


def test_text_non_numeric(capsys, tmp_path):
    src = make_bad(tmp_path, "words.txt", b"1 2 3\n4 five 6\n")
    convert_fails(capsys, tmp_path, src, 3, "words.txt", "non-numeric")


def test_text_with_a_header_and_no_rows(capsys, tmp_path):
    src = make_bad(tmp_path, "head.txt", b"x y z intensity\n\n")
    convert_fails(capsys, tmp_path, src, 3, "no points")


def test_text_column_spec_of_the_wrong_length(capsys, tmp_path):
    src = make_bad(tmp_path, "cols.xyz", b"1 2 3\n4 5 6\n")
    convert_fails(capsys, tmp_path, src, 3, "names 4 columns but the data has 3", extra=("--columns", "x,y,z,class"))


# --- KITTI labels and calibration (eval-detect) --------------------------------------------------------------
_CAR = "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"


def _eval_folders(tmp_path, pred_line: str, truth_line: str = _CAR):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    (pred / "000001.txt").write_text(pred_line + "\n")
    (truth / "000001.txt").write_text(truth_line + "\n")
    return pred, truth


def test_eval_detect_label_with_nan(capsys, tmp_path):
    pred, truth = _eval_folders(tmp_path, _CAR.replace(" 0 -1.58", " nan -1.58") + " 0.9")
    fails(capsys, tmp_path, ["eval-detect", "--pred", str(pred), "--truth", str(truth)],
          str(pred / "000001.txt"), 3, "000001.txt", "line 1", "NaN")


def test_eval_detect_label_line_with_missing_values(capsys, tmp_path):
    pred, truth = _eval_folders(tmp_path, "Car 0.00 0 -1.58 587.01 173.33")
    fails(capsys, tmp_path, ["eval-detect", "--pred", str(pred), "--truth", str(truth)],
          str(pred / "000001.txt"), 3, "line 1", "6 values")


def test_eval_detect_calibration_of_the_wrong_size(capsys, tmp_path):
    from pcseg.io.kitti import LIDAR_FRAME_HEADER

    pred, truth = _eval_folders(tmp_path, LIDAR_FRAME_HEADER + "\n" + _CAR + " 0.9")
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "000001.txt").write_text("P2: 1 0 0 0 0 1 0 0 0 0 1\nR0_rect: 1 0 0 0 1 0 0 0 1\n"
                                      "Tr_velo_to_cam: 1 0 0 0 0 1 0 0 0 0 1 0\n")
    fails(capsys, tmp_path, ["eval-detect", "--pred", str(pred), "--truth", str(truth), "--calib", str(calib)],
          str(calib / "000001.txt"), 3, "P2 has 11 values, expected 12")


# --- paths, stdin and usage ----------------------------------------------------------------------------------
def test_unknown_extension(capsys, tmp_path):
    src = make_bad(tmp_path, "cloud.abc", b"1 2 3\n")
    convert_fails(capsys, tmp_path, src, 3, "cloud.abc", "extension")


def test_missing_path(capsys, tmp_path):
    convert_fails(capsys, tmp_path, str(tmp_path / "nope.las"), 3, "nope.las", "no such file")


def test_directory_instead_of_file(capsys, tmp_path):
    d = tmp_path / "folder.las"
    d.mkdir()
    convert_fails(capsys, tmp_path, str(d), 3, "folder.las", "directory")


def test_stdin_without_format_is_usage_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(np.zeros(8, "<f4").tobytes())))
    code, err = run(capsys, "info", "-")
    assert_one_line_error(code, err, 2, "--format")


def test_refuses_to_overwrite_input(capsys, tmp_path):
    src = tmp_path / "in.laz"
    shutil.copy(EXAMPLE, src)
    before = src.read_bytes()
    code, err = run(capsys, "subsample", str(src), "-o", str(src), "--cell", "1")
    assert_one_line_error(code, err, 2, "--force")
    assert src.read_bytes() == before


def test_bad_cell_is_usage_error(capsys, tmp_path):
    code, err = run(capsys, "subsample", EXAMPLE, "-o", str(tmp_path / "o.laz"), "--cell", "-1")
    assert_one_line_error(code, err, 2, "--cell")


def test_unknown_input_format_is_usage_error(capsys, tmp_path):
    convert_fails(capsys, tmp_path, EXAMPLE, 2, "unknown format 'xyzzy'", extra=("--in-format", "xyzzy"))


def test_output_without_extension_is_usage_error(capsys, tmp_path):
    out = str(tmp_path / "cloud")
    fails(capsys, tmp_path, ["convert", EXAMPLE, "-o", out], EXAMPLE, 2, "output format", "--format", out=out)
