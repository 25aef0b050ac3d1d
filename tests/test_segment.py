"""`pcseg segment` end to end on real tiles with a small checkpoint trained here."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import laspy
import numpy as np
import pytest

from pcseg.cli.main import main

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ign_lidarhd_77060_627760.laz")


@pytest.fixture(scope="module")
def checkpoint(shared_data, tmp_path_factory):
    from pcseg.engine.train import Trainer, TrainConfig

    os.environ.setdefault("PCSEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    run = tmp_path_factory.mktemp("seg-run")
    cfg = TrainConfig(data=[str(shared_data / "als" / "test_data_77050_627755_LA93_IGN69.laz")],
                      model="salanet", model_options={"width": 8}, features=["one", "intensity", "z"], dl0=1.0,
                      sphere_radius=15.0, class_map="asprs", optimizer="adamw", lr=5e-3, max_steps=3,
                      spheres_per_batch=2, log_every=1)
    Trainer(cfg, run).train()
    return str(run / "last.safetensors")


def test_segment_writes_class_and_keeps_every_original_dimension(checkpoint, tmp_path, capsys):
    out = tmp_path / "seg.laz"
    code = main(["segment", EXAMPLE, "--model", checkpoint, "-o", str(out), "--votes", "2", "--confidence",
                 "--proba", "--eval", "classification", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    a, b = laspy.read(EXAMPLE), laspy.read(out)
    for name in a.point_format.dimension_names:
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), name
    assert np.array_equal(a.points.array[["X", "Y", "Z"]], b.points.array[["X", "Y", "Z"]])
    labels = np.asarray(b["class"])
    assert labels.max() < 8 and len(labels) == len(a.points)
    conf = np.asarray(b["confidence"])
    assert (conf > 0).all() and (conf <= 1).all()
    probs = np.stack([np.asarray(b[n]) for n in b.point_format.extra_dimension_names if n.startswith("prob_")], 1)
    assert probs.shape[1] == 8 and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert np.allclose(conf, probs.max(1))
    assert np.array_equal(labels, probs.argmax(1))
    for key in ("input", "output", "points", "seconds", "points_per_second", "classes", "metrics"):
        assert key in summary
    assert summary["points"] == len(a.points) and sum(summary["classes"].values()) == len(a.points)
    assert 0 <= summary["metrics"]["miou"] <= 1


def test_as_classification_writes_asprs_codes(checkpoint, tmp_path):
    out = tmp_path / "asprs.laz"
    assert main(["segment", EXAMPLE, "--model", checkpoint, "-o", str(out), "--votes", "1",
                 "--as-classification", "--quiet"]) == 0
    a, b = laspy.read(EXAMPLE), laspy.read(out)
    assert set(np.unique(b.classification)) <= {1, 2, 3, 4, 5, 6, 9, 17}
    assert "class" not in b.point_format.extra_dimension_names
    for name in a.point_format.dimension_names:
        if name != "classification":
            assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), name


def test_segment_in_a_pipeline(checkpoint):
    data = open(EXAMPLE, "rb").read()
    r = subprocess.run([sys.executable, "-m", "pcseg", "segment", "-", "--format", "laz", "-o", "-", "--model",
                        checkpoint, "--votes", "1", "--quiet"], input=data, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    out = laspy.read(io.BytesIO(r.stdout))
    assert len(out.points) == len(laspy.read(EXAMPLE).points) and "class" in out.point_format.extra_dimension_names


def test_segment_refuses_bad_model_and_overwrite(checkpoint, tmp_path, capsys):
    assert main(["segment", EXAMPLE, "--model", "no-such-model", "-o", str(tmp_path / "x.laz")]) == 2
    assert "no-such-model" in capsys.readouterr().err
    src = tmp_path / "in.laz"
    src.write_bytes(open(EXAMPLE, "rb").read())
    assert main(["segment", str(src), "--model", checkpoint, "-o", str(src)]) == 2


def test_eval_command(tmp_path, capsys):
    from pcseg.io import read, write

    cloud = read(EXAMPLE)
    pred = cloud.fields["classification"].copy()
    pred[:100] = 99
    write(cloud.with_fields(pred=pred), str(tmp_path / "p.laz"))
    assert main(["eval", str(tmp_path / "p.laz"), "--truth", "classification", "--pred", "pred", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["oa"] == pytest.approx(1 - 100 / len(cloud))
    assert s["miou"] < 1.0


def test_tiled_processing_matches_whole_cloud(checkpoint, tmp_path, capsys):
    """A file processed in tiles (bounded memory) keeps every record and agrees with the in-memory result."""
    whole, tiled = tmp_path / "whole.laz", tmp_path / "tiled.laz"
    assert main(["segment", EXAMPLE, "--model", checkpoint, "-o", str(whole), "--votes", "1", "--quiet"]) == 0
    assert main(["segment", EXAMPLE, "--model", checkpoint, "-o", str(tiled), "--votes", "1", "--json",
                 "--tile-points", "15000", "--eval", "classification", "--confidence"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tiles"] >= 2 and "miou" in summary["metrics"]
    a, w, t = laspy.read(EXAMPLE), laspy.read(whole), laspy.read(tiled)
    assert np.array_equal(a.points.array, t.points.array[list(a.points.array.dtype.names)])
    assert t.header.point_format.id == a.header.point_format.id
    assert len(t.header.vlrs) == len(a.header.vlrs) + 1  # + the extra-bytes description of the new fields
    agree = np.mean(np.asarray(w["class"]) == np.asarray(t["class"]))
    assert agree > 0.9, agree  # same cells; only the sphere layout differs near tile borders
    assert (np.asarray(t["confidence"]) > 0).all()


def test_bf16_and_smaller_batches_agree_with_the_default(checkpoint, tmp_path):
    """bfloat16 autocast, and smaller inference tiles (a smaller point budget), change few labels."""
    outs = {}
    for name, extra in (("ref", []), ("bf16", ["--bf16"]), ("region", ["--batch-points", "8000"])):
        out = tmp_path / f"{name}.laz"
        assert main(["segment", EXAMPLE, "--model", checkpoint, "-o", str(out), "--votes", "1", "--quiet"]
                    + extra) == 0
        outs[name] = np.asarray(laspy.read(out)["class"])
    assert np.mean(outs["bf16"] == outs["ref"]) > 0.95
    assert np.mean(outs["region"] == outs["ref"]) > 0.8
