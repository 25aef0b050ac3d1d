"""Bad input: one line naming the file and the problem, exit code 3 (2 for usage), no traceback, no output left."""
from __future__ import annotations

import os
import shutil

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


def convert_fails(capsys, tmp_path, src, expected_code, *needles, extra=()):
    out = tmp_path / "out.ply"
    code, err = run(capsys, "convert", src, "-o", str(out), *extra)
    assert_one_line_error(code, err, expected_code, *needles)
    assert not out.exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".pcseg-")]


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


def test_wrong_magic_ply(capsys, tmp_path):
    src = make_bad(tmp_path, "fake.ply", b"this is not a ply\n" * 10)
    convert_fails(capsys, tmp_path, src, 3, "fake.ply", "ply")


def test_truncated_ply(capsys, tmp_path):
    header = b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    src = make_bad(tmp_path, "short.ply", header + np.zeros(50 * 3, "<f4").tobytes())
    convert_fails(capsys, tmp_path, src, 3, "short.ply")


def test_empty_cloud(capsys, tmp_path):
    src = make_bad(tmp_path, "empty.ply", b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n")
    convert_fails(capsys, tmp_path, src, 3, "empty.ply", "no points")


def test_empty_bin(capsys, tmp_path):
    src = make_bad(tmp_path, "empty.bin", b"")
    convert_fails(capsys, tmp_path, src, 3, "empty.bin", "no points")


def test_nan_coordinates(capsys, tmp_path):
    src = make_bad(tmp_path, "nan.xyz", b"1 2 3\nnan 2 3\n4 5 6\n")
    convert_fails(capsys, tmp_path, src, 3, "nan.xyz", "NaN")


def test_inf_coordinates(capsys, tmp_path):
    pts = np.array([[0, 0, 0, 1], [np.inf, 0, 0, 1]], dtype="<f4")
    src = make_bad(tmp_path, "inf.bin", pts.tobytes())
    convert_fails(capsys, tmp_path, src, 3, "inf.bin", "infinite")


def test_label_count_mismatch(capsys, tmp_path):
    src = make_bad(tmp_path, "scan.bin", np.zeros((10, 4), "<f4").tobytes())
    labels = make_bad(tmp_path, "scan.label", np.zeros(9, "<u4").tobytes())
    from pcseg.errors import BadInputError
    from pcseg.io import read

    with pytest.raises(BadInputError, match="9 labels for 10 points"):
        read(src, labels=labels)


def test_bin_size_not_multiple_of_row(capsys, tmp_path):
    src = make_bad(tmp_path, "odd.bin", b"\0" * 18)
    convert_fails(capsys, tmp_path, src, 3, "odd.bin", "multiple")


def test_unknown_extension(capsys, tmp_path):
    src = make_bad(tmp_path, "cloud.abc", b"1 2 3\n")
    convert_fails(capsys, tmp_path, src, 3, "cloud.abc", "extension")


def test_missing_path(capsys, tmp_path):
    convert_fails(capsys, tmp_path, str(tmp_path / "nope.las"), 3, "nope.las", "no such file")


def test_directory_instead_of_file(capsys, tmp_path):
    d = tmp_path / "folder.las"
    d.mkdir()
    convert_fails(capsys, tmp_path, str(d), 3, "folder.las", "directory")


def test_unsupported_las_version(capsys, tmp_path):
    data = bytearray(open(EXAMPLE, "rb").read())
    data[24], data[25] = 2, 0  # LAS 2.0
    src = make_bad(tmp_path, "v20.laz", bytes(data))
    convert_fails(capsys, tmp_path, src, 3, "v20.laz", "unsupported LAS version 2.0")


def test_text_ragged_rows(capsys, tmp_path):
    src = make_bad(tmp_path, "ragged.txt", b"1 2 3 4\n5 6 7\n")
    convert_fails(capsys, tmp_path, src, 3, "ragged.txt", "columns")


def test_text_non_numeric(capsys, tmp_path):
    src = make_bad(tmp_path, "words.txt", b"1 2 3\n4 five 6\n")
    convert_fails(capsys, tmp_path, src, 3, "words.txt", "non-numeric")


def test_npy_wrong_shape(capsys, tmp_path):
    p = tmp_path / "flat.npy"
    np.save(p, np.zeros(10))
    convert_fails(capsys, tmp_path, str(p), 3, "flat.npy", "shape")


def test_ply_without_xyz(capsys, tmp_path):
    src = make_bad(tmp_path, "noxyz.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n")
    convert_fails(capsys, tmp_path, src, 3, "noxyz.ply", "no x")


def test_pcd_garbage(capsys, tmp_path):
    src = make_bad(tmp_path, "bad.pcd", b"VERSION 0.7\nFIELDS x y z\n")
    convert_fails(capsys, tmp_path, src, 3, "bad.pcd", "header")


def test_stdin_without_format_is_usage_error(capsys, tmp_path, monkeypatch):
    import io
    import sys

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
