"""`pcseg export`: the exported network gives the original's logits on a real tile and runs through
`pcseg segment` like a checkpoint."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pcseg.cli.main import main

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ign_lidarhd_77060_627760.laz")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "tiny.pt2"
    assert main(["export", "sala-als-tiny", "-o", str(path), "--no-check", "-q"]) == 0
    return path


def test_exported_network_matches_the_original_on_a_real_tile(exported):
    from pcseg.engine.export import compare
    from pcseg.io import read
    from pcseg.models import zoo

    original, again = zoo.load("sala-als-tiny"), zoo.load(str(exported))
    assert again.card["exported"]["format"] == "torch.export"
    assert again.card["classes"] == original.card["classes"] and again.card["features"] == original.card["features"]
    r = compare(original, again, read(EXAMPLE))
    assert r["points"] > 10_000
    assert r["max_abs_logit_diff"] < 1e-3, r
    assert r["labels_identical"] == 1.0


def test_exported_network_shapes_are_dynamic(exported):
    """Other region counts and point counts than the ones it was traced on."""
    from pcseg.data.batch import build_batch
    from pcseg.models import zoo

    ck, original = zoo.load(str(exported)), zoo.load("sala-als-tiny")
    spec = ck.model.pyramid_spec
    rng = np.random.default_rng(0)
    clouds = [rng.uniform(-20, 20, size=(n, 3)).astype(np.float32) * [1, 1, 0.2] for n in (900, 2500, 400)]
    feats = [np.concatenate([np.ones((len(c), 1)), rng.uniform(0, 1, (len(c), 2))], 1).astype(np.float32) for c in clouds]
    batch = build_batch(clouds, feats, spec).to("cpu")
    import torch

    with torch.inference_mode():
        a, b = original.model.eval()(batch), ck.model(batch)
    assert a.shape == b.shape == (3800, len(ck.card["classes"]["names"]))
    assert float((a - b).abs().max()) < 1e-3


def test_segment_runs_an_exported_model(exported, tmp_path, capsys):
    out_a, out_b = tmp_path / "a.laz", tmp_path / "b.laz"
    assert main(["segment", EXAMPLE, "-m", "sala-als-tiny", "-o", str(out_a), "--votes", "1", "--json"]) == 0
    assert main(["segment", EXAMPLE, "-m", str(exported), "-o", str(out_b), "--votes", "1", "--json"]) == 0
    a, b = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert a["classes"] == b["classes"]
    import laspy

    assert np.array_equal(laspy.read(out_a)["class"], laspy.read(out_b)["class"])


def test_export_refuses_unknown_format_and_detectors(tmp_path, capsys):
    assert main(["export", "sala-als-tiny", "-o", str(tmp_path / "m.zip")]) == 2
    assert "export writes .pt2, .onnx files" in capsys.readouterr().err
    assert main(["export", "focals-kitti", "-o", str(tmp_path / "m.pt2")]) == 2
    assert "export covers segmentation networks" in capsys.readouterr().err


def test_a_damaged_export_is_a_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["segment", EXAMPLE, "-m", str(bad), "-o", str(tmp_path / "x.laz")]) == 3
    err = capsys.readouterr().err
    assert "not a pcseg export" in err and "Traceback" not in err
    import zipfile

    with zipfile.ZipFile(tmp_path / "zip.pt2", "w") as z:   # a zip archive, but no exported program
        z.writestr("data.txt", "hello")
    assert main(["segment", EXAMPLE, "-m", str(tmp_path / "zip.pt2"), "-o", str(tmp_path / "y.laz")]) == 3
    err = capsys.readouterr().err
    assert "not a pcseg export" in err and "Traceback" not in err


def test_onnx_export_runs_in_onnx_runtime(tmp_path, capsys):
    """Optional extra `onnx`: the graph, run by ONNX Runtime on regions it was not traced on, gives the
    original's logits."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    path = tmp_path / "tiny.onnx"
    assert main(["export", "sala-als-tiny", "-o", str(path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["check"]["runtime"] == "onnxruntime" and r["check"]["points"] > 10_000
    assert r["check"]["max_abs_logit_diff"] < 1e-3 and r["check"]["labels_identical"] == 1.0
    import onnx

    card = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["pcseg_card"])
    assert card["exported"]["format"] == "onnx" and card["classes"]["names"][0] == "ground"


def test_onnx_without_the_extra_says_how_to_install(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_onnx(name, *a, **k):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert main(["export", "sala-als-tiny", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'pcseg[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
