"""`pcseg adapt`: a short adaptation of the shipped airborne model on a crop of the real example tile writes a
checkpoint `pcseg segment` runs, with new weights and a card that records the adaptation; the --minutes budget
stops it in time; the errors a user can hit are one line."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pcseg.cli.main import main
from pcseg.io import read, write
from pcseg.models import zoo

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ign_lidarhd_77060_627760.laz"


def _corner(tmp_path_factory, name: str, far: bool) -> Path:
    """A 20 m x 20 m corner of the example tile (IGN LiDAR HD, ground / vegetation / building labels)."""
    cloud = read(str(EXAMPLE))
    xy = cloud.xyz[:, :2]
    keep = np.all(xy > xy.max(axis=0) - 20.0, axis=1) if far else np.all(xy < xy.min(axis=0) + 20.0, axis=1)
    path = tmp_path_factory.mktemp("adapt") / name
    write(cloud.select(keep), str(path))
    return path


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> Path:
    return _corner(tmp_path_factory, "survey_patch.laz", far=False)


@pytest.fixture(scope="module")
def other_corner(tmp_path_factory) -> Path:
    return _corner(tmp_path_factory, "survey_check.laz", far=True)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PCSEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def adapted(crop, other_corner, tmp_path_factory):
    """`pcseg adapt sala-als crop -o out.pt --steps 2 --val other_corner --holdout 0 --json` (no check: the last
    step is written, the val file reported on): (output path, its JSON summary)."""
    import os

    os.environ.setdefault("PCSEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    out = tmp_path_factory.mktemp("adapted") / "mine.pt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import io
        from contextlib import redirect_stdout

        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = main(["adapt", "sala-als", str(crop), "-o", str(out), "--steps", "2", "--val", str(other_corner),
                       "--holdout", "0", "--threads", "1", "--json"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    return Path(str(out) + ".safetensors"), json.loads(buf.getvalue().strip().splitlines()[-1])


def test_adapt_writes_a_checkpoint_that_segment_runs(adapted, crop, tmp_path):
    path, summary = adapted
    assert path.is_file() and summary["output"] == str(path)
    assert summary["steps"] == 2 and summary["stopped_by"] == "steps"
    assert summary["lr"] == pytest.approx(0.001)
    assert 0 < summary["validation"]["miou"] <= 1
    seg = tmp_path / "segmented.laz"
    assert main(["segment", str(crop), "--model", str(path), "-o", str(seg), "--quiet"]) == 0
    out = read(str(seg))
    assert len(out) == len(read(str(crop))) and "class" in out.fields


def test_adapted_weights_move_and_the_card_records_the_adaptation(adapted, crop):
    path, _ = adapted
    new, old = zoo.load(str(path)), zoo.load("sala-als")
    a, b = new.model.state_dict(), old.model.state_dict()
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    card = new.card
    info = card["adaptation"]
    assert info["from"] == "sala-als" and info["from_sha256"] == zoo.shipped()["sala-als"]["sha256"]
    assert info["files"] == [crop.name] and info["steps"] == 2 and info["stopped_by"] == "steps"
    assert info["settings"]["steps"] == 2 and info["per_point_tests"]["building_test"] == "kept"
    assert info["command"].startswith(f"pcseg adapt sala-als {crop.name} ") and info["command"].endswith("--holdout 0")
    assert "check" not in info   # --holdout 0: no check, the last step is written
    assert card["trained_on"][-1] == crop.name
    assert card["validated_on"] == ["survey_check.laz"] and card["metrics"]["miou"] > 0
    # what segment needs is the base model's; none of the base model's measured figures is carried over
    for key in ("classes", "features", "dl0", "sphere_radius", "neighbor_limits", "vegetation_split", "building_test"):
        assert card[key] == old.card[key]
    for key in ("quality", "evaluation", "speed", "sha256", "name", "measured_on"):
        assert key not in card
    assert str(crop.parent) not in json.dumps(card) and "/tmp" not in json.dumps(card)


def test_batch_norm_statistics_stay_the_models(adapted):
    path, _ = adapted
    a, b = zoo.load(str(path)).model.state_dict(), zoo.load("sala-als").model.state_dict()
    stats = [k for k in a if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(a[k], b[k]) for k in stats)


def test_building_test_is_turned_off_only_where_it_removes_the_labelled_roofs(crop, shared_data, tmp_path):
    from pcseg.data.datasets import resolve_data
    from pcseg.engine.adapt import choose_building_test

    ck = zoo.load("sala-als")
    kept = choose_building_test(ck, resolve_data([str(crop)], ck.card["features"], class_map="als"))
    assert kept["building_test"] == "kept" and kept["min_height"] == 2.0
    # the east half of the PDAL sample sample_c.las is one roof: the ground estimates lie on it, and the test
    # turns the network's (right) building into ground
    cloud = read(str(shared_data / "als" / "sample_c.las"))
    roof = tmp_path / "roof.las"
    write(cloud.select(cloud.xyz[:, 0] >= np.median(cloud.xyz[:, 0])), str(roof))
    off = choose_building_test(ck, resolve_data([str(roof)], ck.card["features"], class_map="als"))
    assert off["building_test"] == "off" and off["min_height"] is None
    m = off["miou_labelled_files"]
    assert m["without_test"] > m["with_test"] + 0.2  # building IoU ~0 -> ~1 (2 vegetation and 31 wire points: 0)


def test_minutes_budget_stops_in_time_and_still_writes_the_model(crop, tmp_path):
    from pcseg.engine.adapt import AdaptSettings, adapt

    out = tmp_path / "budget.safetensors"
    # a budget of 12 s of which 3 s are already spent: the run stops before a step that would not leave the
    # 3 s it keeps for writing, and writes the model
    started = time.perf_counter() - 3.0
    result = adapt("sala-als", [str(crop)], out, AdaptSettings(steps=1000, minutes=0.2), started=started)
    spent = time.perf_counter() - started
    assert result.stopped_by == "time budget" and 1 <= result.steps < 1000
    assert out.is_file() and zoo.load(str(out)).card["adaptation"]["stopped_by"] == "time budget"
    assert spent < 12.0


def _one_line_error(capsys, argv, code):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("pcseg: ") and "\n" not in err and "Traceback" not in err
    return err


def test_errors_are_one_line(crop, tmp_path, capsys):
    out = str(tmp_path / "out.safetensors")
    err = _one_line_error(capsys, ["adapt", "sala-als", str(tmp_path / "missing.laz"), "-o", out], 3)
    assert "no such file" in err
    cloud = read(str(crop))
    blank = tmp_path / "unlabelled.laz"
    write(cloud.with_fields(classification=np.ones(len(cloud), dtype=cloud.fields["classification"].dtype)),
          str(blank))
    err = _one_line_error(capsys, ["adapt", "sala-als", str(blank), "-o", out, "--steps", "1"], 3)
    assert "unlabelled.laz" in err and "label a patch" in err and str(tmp_path) not in err
    assert "not a segmentation model" in _one_line_error(capsys, ["adapt", "focals-kitti", str(crop), "-o", out], 2)
    assert "classes" in _one_line_error(capsys, ["adapt", "sala-als", f"asprs:{crop}", "-o", out], 2)
    assert "no model" in _one_line_error(capsys, ["adapt", "no-such-model", str(crop), "-o", out], 2)
    assert "overwrite" in _one_line_error(
        capsys, ["adapt", str(zoo.MODELS_DIR / "sala-als.safetensors"), str(crop), "-o",
                 str(zoo.MODELS_DIR / "sala-als.safetensors")], 2)
    assert not Path(out).exists()


# --------------------------------------------------------------------------------------------- the check
def test_holdout_blocks_match_a_direct_count():
    from pcseg.engine.adapt import holdout_blocks

    rng = np.random.default_rng(3)
    pts = np.c_[rng.uniform(0, 50, (4000, 2)), rng.normal(0, 1, 4000)]
    labelled = pts[:, 0] < 40            # the blocks past x = 40 m hold no labelled point
    hold = holdout_blocks(pts, labelled, 10.0, 0.2, np.random.default_rng(0))
    cell = [tuple(c) for c in np.floor((pts[:, :2] - pts[:, :2].min(axis=0)) / 10.0).astype(int)]
    labelled_blocks = {c for c, l in zip(cell, labelled) if l}
    held_blocks = {c for c, h in zip(cell, hold) if h}
    assert len(labelled_blocks) == 20 and len(held_blocks) == 4       # a fifth of them
    assert held_blocks <= labelled_blocks                             # drawn from the labelled blocks only
    assert all(h == (c in held_blocks) for c, h in zip(cell, hold))  # whole blocks
    one = holdout_blocks(pts, (pts[:, 0] < 5) & (pts[:, 1] < 5), 10.0, 0.2, np.random.default_rng(0))
    assert not one.any()                                              # a single labelled block: nothing held out
    two = holdout_blocks(pts, pts[:, 0] < 15, 10.0, 0.9, np.random.default_rng(0))
    assert 0 < len({c for c, h in zip(cell, two) if h}) < 10          # never every block


def test_the_check_keeps_the_model_when_adapting_makes_it_worse(crop, tmp_path):
    """A learning rate of 0.05 (50x the default) wrecks the network in a few steps; the held-out blocks see it and the output keeps
    the model's weights, and says so in its card."""
    from pcseg.engine.adapt import AdaptSettings, adapt

    out = tmp_path / "wrecked.safetensors"
    result = adapt("sala-als", [str(crop)], out, AdaptSettings(steps=10, lr=0.05, minutes=None))
    check = result.card["adaptation"]["check"]
    assert check["on"] == "held-out blocks" and check["labelled_cells"] > 0 and check["block"] == 12.5
    assert set(check["scores"]) == {"0", "2", "4", "6", "8", "10"}
    assert check["chosen_step"] == 0 and check["before"] == check["scores"]["0"]
    assert max(v for k, v in check["scores"].items() if k != "0") < check["before"] + 0.01
    a, b = zoo.load(str(out)).model.state_dict(), zoo.load("sala-als").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_check_keeps_the_best_checkpoint_by_the_margin(crop, tmp_path, monkeypatch):
    """Scripted held-out scores: the step that beats the model by the margin and scores best is written; a
    step within the margin of the model is not."""
    import pcseg.engine.adapt as A

    script = iter([0.50, 0.505, 0.58, 0.62, 0.60, 0.55])   # before, then steps 2, 4, 6, 8, 10
    weights = {}

    def validate(self):
        self._keep_statistics()
        self._validated_at = self.step
        weights[self.step] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return {"miou": next(script), "oa": 0.9, "macc": 0.8, "iou": {}}

    monkeypatch.setattr(A.AdaptTrainer, "validate", validate)
    out = tmp_path / "best.safetensors"
    result = A.adapt("sala-als", [str(crop)], out, A.AdaptSettings(steps=10, minutes=None))
    check = result.card["adaptation"]["check"]
    assert check["chosen_step"] == 6 and result.validation["miou"] == 0.62
    got = zoo.load(str(out)).model.state_dict()
    assert all(torch.equal(got[k], weights[6][k]) for k in got)
    assert any(not torch.equal(got[k], weights[10][k]) for k in got if got[k].is_floating_point())
    script = iter([0.50, 0.505, 0.509, 0.50, 0.49, 0.48])   # nothing beats 0.50 by a point
    result = A.adapt("sala-als", [str(crop)], tmp_path / "same.safetensors", A.AdaptSettings(steps=10, minutes=None))
    assert result.card["adaptation"]["check"]["chosen_step"] == 0
