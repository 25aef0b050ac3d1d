"""Checkpoints round-trip without pickles; metrics match hand-computed values."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from pcseg.data import PyramidSpec
from pcseg.engine.metrics import confusion_matrix, scores
from pcseg.errors import BadInputError
from pcseg.models import register
from pcseg.models.checkpoint import load_checkpoint, load_state, read_card, save_checkpoint, save_state, sha256_file


class _Tiny(nn.Module):
    def __init__(self, num_classes: int, in_features: int, width: int = 4):
        super().__init__()
        self.opts = dict(num_classes=num_classes, in_features=in_features, width=width)
        self.lin = nn.Linear(in_features, num_classes)
        self.register_buffer("kernel_points", torch.randn(5, 3))
        self.pyramid_spec = PyramidSpec(dl0=0.1, radii=[0.25])

    def config(self):
        return dict(self.opts)

    def forward(self, batch):
        return self.lin(batch.features)


try:
    register("test-tiny")(lambda num_classes, in_features, width=4: _Tiny(num_classes, in_features, width))
except ValueError:
    pass


def test_checkpoint_roundtrip_keeps_weights_buffers_and_card(tmp_path):
    model = _Tiny(3, 2)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, {"model": "test-tiny", "classes": {"names": ["a", "b", "c"]}, "dl0": 0.1})
    ck = load_checkpoint(path, expect_sha256=sha256_file(path))
    assert torch.equal(ck.model.lin.weight, model.lin.weight)
    assert torch.equal(ck.model.kernel_points, model.kernel_points)  # saved, never regenerated
    assert ck.card["classes"]["names"] == ["a", "b", "c"] and ck.card["params"] == 9
    assert read_card(path)["model"] == "test-tiny"
    assert not ck.model.training


def test_checksum_mismatch_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _Tiny(3, 2), {"model": "test-tiny"})
    with pytest.raises(BadInputError, match="checksum"):
        load_checkpoint(path, expect_sha256="0" * 64)


def test_pickled_checkpoint_is_refused_and_never_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle ran')",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Boom()}, path)
    with pytest.raises(BadInputError, match="pickle"):
        load_checkpoint(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(BadInputError):
        load_checkpoint(raw)


def test_training_state_roundtrip(tmp_path):
    model = _Tiny(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.lin(torch.randn(4, 2)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "step": 7, "rng": torch.get_rng_state(), "np": [1, 2, (3, "x")]}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["step"] == 7 and back["np"] == [1, 2, (3, "x")]
    assert torch.equal(back["rng"], state["rng"])
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])
    buf = opt2.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(buf, opt.state_dict()["state"][0]["momentum_buffer"])


def test_metrics_hand_computed():
    truth = np.array([0, 0, 0, 1, 1, 2, -1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0, 2, 2])
    cm = confusion_matrix(pred, truth, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    s = scores(cm, ["a", "b", "c"])
    assert s["oa"] == pytest.approx(5 / 7)
    # IoU a = 2/(3+3-2)=0.5, b = 2/(2+3-2)=2/3, c = 1/(2+1-1)=0.5
    assert s["iou"] == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 0.5})
    assert s["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert s["macc"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)


def test_metrics_absent_class_left_out():
    s = scores(confusion_matrix(np.array([0, 1]), np.array([0, 1]), 3))
    assert s["iou"]["2"] is None and s["miou"] == 1.0


def test_miou_present_leaves_out_classes_only_predicted():
    # class 2 has no ground truth but takes one point of class 0: IoU 0 in miou, left out of miou_present
    truth = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 2, 1, 1])
    s = scores(confusion_matrix(pred, truth, 3))
    assert s["iou"] == pytest.approx({"0": 0.75, "1": 1.0, "2": 0.0})
    assert s["miou"] == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    assert s["miou_present"] == pytest.approx((0.75 + 1.0) / 2)


def test_header_length_bytes_that_look_like_pickle_or_zip_are_fine(tmp_path):
    """The safetensors header length's low byte can be 0x80 (pickle protocol marker) or 'PK' (zip)."""
    import json
    import struct

    for low in (b"\x80", b"PK"):
        path = tmp_path / "m.safetensors"
        save_checkpoint(path, _Tiny(3, 2), {"model": "test-tiny"})
        data = path.read_bytes()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        target = int.from_bytes(low + b"\x10", "little") if len(low) == 1 else int.from_bytes(low + b"\x00", "little")
        while target < n:
            target += 0x10000
        header["__metadata__"]["pad"] = "x" * (target - n - len(',"pad":""'))
        body = json.dumps(header, separators=(",", ":")).encode()
        assert len(body) == target, (len(body), target)
        path.write_bytes(struct.pack("<Q", len(body)) + body + data[8 + n:])
        assert path.read_bytes()[:len(low)] == low
        assert load_checkpoint(path).card["model"] == "test-tiny"


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("name", ["sala-als", "sala-als-terrain", "sala-als-tiny", "sala-s3dis", "focals-kitti"])
def test_shipped_cards_name_no_machine_path(name):
    """Neither a shipped card nor the card inside its checkpoint shows a folder of the machine it was made on."""
    import json
    import os
    import re
    from pathlib import Path

    models = Path(__file__).resolve().parents[1] / "models"
    for card in (json.loads((models / f"{name}.json").read_text()), read_card(models / f"{name}.safetensors")):
        bad = [s for s in _strings(card) if os.path.isabs(s) or os.path.isabs(s.partition(":")[2])
               or re.search(r"(^|[\s'\"(=:])/(tmp|work|home|root|Users)/", s)]  # also inside a sentence
        assert not bad, bad[:3]


def test_portable_card_rewrites_absolute_paths_only():
    import os

    from pcseg.engine.train import portable_card

    here = os.getcwd()
    card = {"a": os.path.join(here, "x.laz"), "b": [f"als-ground:{os.path.join(here, 'y.las')}", "rel/z.ply"],
            "c": {"d": 3, "e": "sala-als"}}
    out = portable_card(card)
    assert out == {"a": "x.laz", "b": ["als-ground:y.las", "rel/z.ply"], "c": {"d": 3, "e": "sala-als"}}


def test_models_average_is_the_mean_of_the_weights_and_refuses_other_networks(tmp_path, capsys):
    from pcseg.cli.main import main
    from pcseg.models import build

    paths = []
    for seed, width in ((0, 8), (1, 8), (2, 12)):
        torch.manual_seed(seed)
        model = build("salanet", num_classes=3, in_features=2, width=width)
        for m in model.modules():  # distinct running statistics too
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_()
                m.num_batches_tracked.fill_(seed + 5)
        path = tmp_path / f"m{seed}.safetensors"
        save_checkpoint(path, model, {"model": "salanet", "classes": {"names": ["a", "b", "c"]},
                                      "training": {"command": f"pcseg train seed={seed}"}})
        paths.append(path)
    out = tmp_path / "soup.safetensors"
    assert main(["models", "average", str(paths[0]), str(paths[1]), "-o", str(out)]) == 0
    a, b = load_checkpoint(paths[0]).model.state_dict(), load_checkpoint(paths[1]).model.state_dict()
    soup = load_checkpoint(out)
    for k, v in soup.model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, (a[k] + b[k]) / 2, atol=1e-6), k
        else:
            assert torch.equal(v, a[k]), k
    assert soup.card["soup_of"] == ["pcseg train seed=0", "pcseg train seed=1"]
    capsys.readouterr()
    assert main(["models", "average", str(paths[0]), str(paths[2]), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "not the same network" in capsys.readouterr().err
    assert main(["models", "average", str(paths[0]), str(paths[1]), "-o", str(paths[0])]) == 2
    assert not (tmp_path / "x.safetensors").exists()


def test_models_list_names_what_every_shipped_model_was_trained_and_measured_on(capsys):
    """Segmentation cards list their files; the detector's card its KITTI frames and scans."""
    import json

    from pcseg.cli.main import main

    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows and all(r["trained_on"] and r["measured_on"] for r in rows.values())
    assert "KITTI 004139" in rows["focals-kitti"]["measured_on"]
    assert "KITTI 004139" not in rows["focals-kitti"]["trained_on"]
