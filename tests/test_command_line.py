"""One command line: the shared flags, help screens, many inputs with per-file failures, --skip-existing,
--jobs, byte-identical reruns and the device setting."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from pcseg.cli.main import main

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ign_lidarhd_77060_627760.laz")
COMPUTING = ("segment", "detect", "train", "distill")


def _help(capsys, *cmd) -> str:
    assert main([*cmd, "--help"]) == 0
    out = capsys.readouterr().out
    return "".join(" " if ch in "│╭╮╰╯─" else ch for ch in out)   # the panels' frame, not the text


@pytest.mark.parametrize("cmd", ["info", "convert", "subsample", "tile", "segment", "eval", "detect", "eval-detect",
                                 "train", "distill", "render", "export"])
def test_help_shows_types_the_typer_way(cmd, capsys):
    """Types as TEXT / INTEGER / PATH, flags without a type (not <str>, <bool>, <list[str]>)."""
    out = _help(capsys, cmd)
    assert "<str>" not in out and "<bool>" not in out and "<int>" not in out and "list[" not in out, out
    assert "Usage: pcseg " + cmd in " ".join(out.split())


@pytest.mark.parametrize("cmd", COMPUTING)
def test_computing_commands_share_quiet_json_threads_device(cmd, capsys):
    out = " ".join(_help(capsys, cmd).split())
    for flag in ("--quiet", "--json", "--threads", "--device"):
        assert flag in out, (cmd, flag)
    assert "auto (CUDA when available, else CPU)" in out
    assert "[default: auto]" in out


@pytest.mark.parametrize("cmd", ["convert", "subsample", "tile", "info", "render", "export"])
def test_other_commands_take_json_and_quiet(cmd, capsys):
    out = _help(capsys, cmd)
    assert "--json" in out and ("--quiet" in out or cmd == "info")


def test_resolve_device():
    import torch

    from pcseg.engine.runtime import resolve_device
    from pcseg.errors import UsageError

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == "cpu"
    for bad in ("gpu", "cuda:x", "cuda0"):
        with pytest.raises(UsageError, match="auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            resolve_device("cuda:0")


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_same_input_same_flags_give_byte_identical_outputs(tmp_path):
    """Run after run (fresh model load each time), LAS and PLY outputs are the same bytes."""
    outs = []
    for i in range(2):
        for ext in ("laz", "ply"):
            out = tmp_path / f"run{i}.{ext}"
            assert main(["segment", EXAMPLE, "-m", "sala-als", "-o", str(out), "--votes", "2", "--confidence",
                         "--threads", "2", "-q"]) == 0
            outs.append(_digest(out))
    assert outs[0] == outs[2] and outs[1] == outs[3]


def test_many_inputs_one_bad_tile_the_others_finish(tmp_path, capsys):
    shutil.copy(EXAMPLE, tmp_path / "a.laz")
    (tmp_path / "bad.laz").write_bytes(open(EXAMPLE, "rb").read()[:4000])   # truncated: bad input
    shutil.copy(EXAMPLE, tmp_path / "c.laz")
    before = _digest(tmp_path / "bad.laz")
    out = tmp_path / "out"
    rc = main(["segment", str(tmp_path / "*.laz"), "-m", "sala-als", "--out-dir", str(out), "--votes", "1", "--json"])
    cap = capsys.readouterr()
    assert rc == 3                                           # the worst failure's exit code (bad input)
    lines = [json.loads(line) for line in cap.out.splitlines()]
    assert [os.path.basename(s["input"]) for s in lines] == ["a.laz", "c.laz"]
    assert sorted(os.listdir(out)) == ["a_seg.laz", "c_seg.laz"]
    errors = [line for line in cap.err.splitlines() if "error" in line]
    assert len(errors) == 1 and "bad.laz" in errors[0] and "Traceback" not in cap.err
    assert _digest(tmp_path / "bad.laz") == before

    # a rerun with --skip-existing leaves finished tiles alone (and still reports the bad one)
    stamp = os.path.getmtime(out / "a_seg.laz")
    rc = main(["segment", str(tmp_path / "*.laz"), "-m", "sala-als", "--out-dir", str(out), "--votes", "1", "--json",
               "--skip-existing"])
    cap = capsys.readouterr()
    assert rc == 3
    lines = [json.loads(line) for line in cap.out.splitlines()]
    assert all(s.get("skipped") for s in lines) and len(lines) == 2
    assert os.path.getmtime(out / "a_seg.laz") == stamp


@pytest.mark.slow
def test_jobs_split_the_inputs_over_worker_processes(tmp_path, capsys):
    for name in ("a", "b"):
        shutil.copy(EXAMPLE, tmp_path / f"{name}.laz")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["segment", str(tmp_path / "*.laz"), "-m", "sala-als", "--out-dir", str(one), "--votes", "1", "-q"]) == 0
    assert main(["segment", str(tmp_path / "*.laz"), "-m", "sala-als", "--out-dir", str(two), "--votes", "1",
                 "--jobs", "2", "--threads", "2", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [os.path.basename(s["input"]) for s in lines] == ["a.laz", "b.laz"]   # input order
    for name in ("a", "b"):
        assert _digest(one / f"{name}_seg.laz") == _digest(two / f"{name}_seg.laz")


@pytest.mark.parametrize("env,expected", [({}, "3000"), ({"GOMP_SPINCOUNT": "7"}, "7"),
                                          ({"OMP_WAIT_POLICY": "PASSIVE"}, None)])
def test_openmp_spin_is_short_unless_the_user_chose(env, expected):
    """Set before torch loads libgomp: the CLI module does it at import; a user's setting wins."""
    import subprocess
    import sys

    code = "import os, pcseg.cli.main; print(os.environ.get('GOMP_SPINCOUNT'))"
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == str(expected)


def test_a_scan_without_colour_is_read_by_the_colour_optional_indoor_model(shared_data, tmp_path, capsys):
    """sala-s3dis learnt colourless input (card color_drop): a PLY with x, y, z only is segmented, with one
    `pcseg:` line saying so on stderr, and nothing with --quiet."""
    import numpy as np

    from pcseg.io import PointCloud, read, write

    room = read(str(shared_data / "indoor" / "scannet_scene0000_02.ply"))
    keep = np.linalg.norm(room.xyz[:, :2] - np.median(room.xyz[:, :2], axis=0), axis=1) < 1.5
    bare = tmp_path / "bare.ply"
    write(PointCloud(room.xyz[keep]), str(bare))
    assert main(["segment", str(bare), "-m", "sala-s3dis", "-o", str(tmp_path / "out.ply"), "--votes", "1"]) == 0
    err = capsys.readouterr().err
    assert "pcseg: " in err and "has no colour: the model reads zero colour" in err
    assert len(read(str(tmp_path / "out.ply")).fields["class"]) == int(keep.sum())
    assert main(["segment", str(bare), "-m", "sala-s3dis", "-o", str(tmp_path / "q.ply"), "--votes", "1", "-q"]) == 0
    assert "no colour" not in capsys.readouterr().err
