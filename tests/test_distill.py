"""SRKD distillation: every loss term against a direct (loop) implementation of its formula, the frozen teacher,
and a short distillation on a real airborne tile."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pcseg.engine import srkd

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ign_lidarhd_77060_627760.laz"


def _softmax(values: list[float]) -> list[float]:
    m = max(values)
    e = [math.exp(v - m) for v in values]
    s = sum(e)
    return [v / s for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q) if a > 0)


def test_kd_loss_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    for t in (1.0, 2.5):
        direct = sum(_kl(_softmax([v / t for v in zt[i].tolist()]), _softmax([v / t for v in zs[i].tolist()]))
                     for i in range(7)) / 7 * t * t
        assert srkd.kd_loss(zs, zt, t).item() == pytest.approx(direct, rel=1e-10)
    assert srkd.kd_loss(zt, zt, 1.0).item() == pytest.approx(0.0, abs=1e-12)


def test_channel_loss_matches_direct_formula():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([4, 6])
    fs, ft = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(10, 3, generator=g, dtype=torch.float64)
    tau = 4.0
    total = 0.0
    start = 0
    for n in lengths.tolist():
        per_channel = []
        for c in range(3):
            pt = _softmax([ft[start + i, c].item() / tau for i in range(n)])
            ps = _softmax([fs[start + i, c].item() / tau for i in range(n)])
            per_channel.append(_kl(pt, ps))
        total += sum(per_channel) / 3
        start += n
    direct = total / 2 * tau * tau
    assert srkd.channel_loss(fs, ft, lengths, tau).item() == pytest.approx(direct, rel=1e-10)
    with pytest.raises(ValueError, match="project the student"):
        srkd.channel_loss(fs[:, :2], ft, lengths, tau)


def test_partition_bins_points_as_the_cylindrical_formula_says():
    g = torch.Generator().manual_seed(2)
    pts = (torch.rand(200, 3, generator=g, dtype=torch.float64) - 0.5) * 60  # beyond the 25 m extent too
    lengths = torch.tensor([120, 80])
    sv = srkd.partition(pts, lengths, extent=25.0, rings=4, sectors=8, layers=4)
    keys = []
    for i, (x, y, z) in enumerate(pts.tolist()):
        cloud = 0 if i < 120 else 1
        ring = min(int(math.hypot(x, y) / 6.25), 3)
        sector = min(int((math.atan2(y, x) + math.pi) / (math.pi / 4)), 7)
        layer = min(max(int(math.floor((z + 25) / 12.5)), 0), 3)
        keys.append((cloud, ring, sector, layer))
        assert sv.ring[sv.ids[i]].item() == ring
    ids = sv.ids.tolist()
    for i in range(200):  # same key <=> same super-voxel
        for j in range(i + 1, 200):
            assert (keys[i] == keys[j]) == (ids[i] == ids[j])
    assert sv.count.tolist() == [ids.count(v) for v in range(len(sv.count))]


def test_sampling_weights_match_direct_formula():
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    sv = srkd.SuperVoxels(ids=ids, ring=torch.tensor([0, 2, 1, 3]), count=torch.tensor([2, 3, 1, 2]), ring_width=5.0)
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 1, 2])
    w = srkd.sampling_weights(sv, labels, num_classes=3)
    freq = [3 / 8, 2 / 8, 3 / 8]
    for v in range(4):
        members = [i for i in range(8) if ids[i] == v]
        class_term = sum(1 / freq[labels[i]] for i in members) / len(members)
        distance_term = math.ceil((sv.ring[v].item() + 1) * 5.0 / 5.0)
        expected = distance_term * class_term if len(members) >= 2 else 0.0
        assert w[v].item() == pytest.approx(expected, rel=1e-6)
    # rarer classes weigh more: a voxel of the rarest class outweighs one of a common class on the same ring
    assert w[3] > w[0] / 3  # ring 3 vs ring 0 already x4; the class term keeps the ordering sensible
    chosen = srkd.sample_supervoxels(w, 10, torch.Generator().manual_seed(0))
    assert sorted(chosen.tolist()) == [0, 1, 3]  # only voxels that can hold a relation, without replacement


def test_fixed_members_truncates_and_pads():
    ids = torch.tensor([2, 0, 2, 1, 2, 2, 0, 2])
    out = srkd.fixed_members(ids, torch.tensor([2, 0, 1]), size=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 3)
    for row, group in zip(out.tolist(), (2, 0, 1)):
        real = [i for i in row if i >= 0]
        assert all(ids[i] == group for i in real)
        assert len(set(real)) == len(real) == min(3, int((ids == group).sum()))
        assert row[len(real):] == [-1] * (3 - len(real))


def _direct_affinity_loss(fs, ft, members):
    total = 0.0
    for row in members.tolist():
        p = len(row)
        for a in range(p):
            for b in range(p):
                def cos(f):
                    if row[a] < 0 or row[b] < 0:
                        return 0.0
                    u, v = f[row[a]], f[row[b]]
                    nu, nv = u.norm().item(), v.norm().item()
                    return 0.0 if nu == 0 or nv == 0 else (u @ v).item() / (nu * nv)
                total += (cos(fs) - cos(ft)) ** 2
    return total / (len(members) * p * p)


def test_affinity_loss_matches_direct_formula_with_padding():
    g = torch.Generator().manual_seed(3)
    fs, ft = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.randn(9, 6, generator=g, dtype=torch.float64)
    members = torch.tensor([[0, 3, 5, -1], [1, 2, 4, 8], [6, 7, -1, -1]])
    assert srkd.affinity_loss(fs, ft, members).item() == pytest.approx(_direct_affinity_loss(fs, ft, members), rel=1e-10)
    # Eq. 4 compares structure, not scale or width: a scaled copy of the teacher's features costs nothing
    assert srkd.affinity_loss(3.0 * ft, ft, members).item() == pytest.approx(0.0, abs=1e-12)


def test_subvoxels_split_super_voxels_into_cells():
    g = torch.Generator().manual_seed(4)
    pts = torch.rand(60, 3, generator=g, dtype=torch.float64) * 10
    sv_ids = torch.randint(0, 3, (60,), generator=g)
    sub, parent = srkd.subvoxels(pts, sv_ids, cell=2.0)
    cells = torch.floor(pts / 2.0).long().tolist()
    for i in range(60):
        assert parent[sub[i]] == sv_ids[i]
        for j in range(60):
            assert (sub[i] == sub[j]).item() == (sv_ids[i] == sv_ids[j] and cells[i] == cells[j])
    feats = torch.randn(60, 2, generator=g, dtype=torch.float64)
    means = srkd.subvoxel_features(feats, sub, len(parent))
    for v in range(len(parent)):
        assert torch.allclose(means[v], feats[sub == v].mean(0))


def test_relation_losses_vanish_when_student_mirrors_teacher():
    g = torch.Generator().manual_seed(5)
    pts = (torch.rand(300, 3, generator=g) - 0.5) * 40
    lengths = torch.tensor([150, 150])
    ft = torch.randn(300, 8, generator=g)
    labels = torch.randint(0, 4, (300,), generator=g)
    lp, lv = srkd.relation_losses(2.0 * ft, ft, pts, lengths, labels, 4, extent=25.0, cell=2.0, generator=g)
    assert lp.item() == pytest.approx(0.0, abs=1e-6) and lv.item() == pytest.approx(0.0, abs=1e-6)
    lp, lv = srkd.relation_losses(torch.randn(300, 3, generator=g), ft, pts, lengths, labels, 4, extent=25.0,
                                  cell=2.0, generator=g)
    assert lp.item() > 1e-4 and lv.item() > 1e-4  # (zero padding dilutes sparse super-voxels)


def _direct_cross_sample(fs, ft, lengths, tau):
    clouds, start = [], 0
    for n in lengths:
        clouds.append((fs[start:start + n], ft[start:start + n]))
        start += n
    norm = lambda f: [(r / r.norm()).tolist() for r in f]  # noqa: E731
    total, pairs = 0.0, 0
    for i in range(len(clouds)):
        for j in range(len(clouds)):
            if i == j and len(clouds) > 1:
                continue
            si, sj = norm(clouds[i][0]), norm(clouds[j][0])
            ti, tj = norm(clouds[i][1]), norm(clouds[j][1])
            rows = 0.0
            for a in range(len(si)):
                ms = [sum(x * y for x, y in zip(si[a], sj[b])) / tau for b in range(len(sj))]
                mt = [sum(x * y for x, y in zip(ti[a], tj[b])) / tau for b in range(len(tj))]
                rows += _kl(_softmax(mt), _softmax(ms))
            total += rows / len(si)
            pairs += 1
    return total / pairs


def test_cross_sample_loss_matches_direct_formula_over_ordered_pairs():
    g = torch.Generator().manual_seed(6)
    lengths = [5, 5, 5]
    fs, ft = torch.randn(15, 4, generator=g, dtype=torch.float64), torch.randn(15, 7, generator=g, dtype=torch.float64)
    fs_d, ft_d = fs[:, :4], ft[:, :4]  # the term compares D-dim embeddings: give both the same width
    # N equal to every cloud's size: the picks are permutations, to which the row-wise KL is invariant
    got = srkd.cross_sample_loss(fs_d, ft_d, torch.tensor(lengths), points_per_sample=5, temperature=0.5,
                                 generator=torch.Generator().manual_seed(0))
    assert got.item() == pytest.approx(_direct_cross_sample(fs_d, ft_d, lengths, 0.5), rel=1e-9)
    # one cloud: paired with itself
    one = srkd.cross_sample_loss(fs_d[:5], ft_d[:5], torch.tensor([5]), points_per_sample=5, temperature=0.5)
    assert one.item() == pytest.approx(_direct_cross_sample(fs_d[:5], ft_d[:5], [5], 0.5), rel=1e-9)


def test_teacher_projection_preserves_similarities():
    heads = srkd.ProjectionHeads(student_channels=9, teacher_channels=32, embed_dim=128)
    f = torch.randn(20, 32)
    p = heads.project_teacher(f)
    assert p.shape == (20, 128)
    assert torch.allclose(p @ p.t(), f @ f.t(), atol=1e-3)
    assert not heads.teacher_geometry.requires_grad
    assert "teacher_geometry" not in dict(heads.named_parameters())


# --- the distiller on the shipped real tile -------------------------------------------------------------

def _split_example(tmp_path: Path) -> tuple[str, str]:
    """Two disjoint halves of the shipped IGN tile (real lidar): training and validation."""
    from pcseg.io import read, write

    cloud = read(str(EXAMPLE))
    x = cloud.xyz[:, 0]
    cut = np.median(x)
    train, val = tmp_path / "west.laz", tmp_path / "east.laz"
    write(cloud.select(x < cut), str(train))
    write(cloud.select(x >= cut), str(val))
    return str(train), str(val)


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    return _split_example(tmp_path_factory.mktemp("halves"))


def _distiller(tmp_path, data, **overrides):
    from pcseg.engine.distill import DistillConfig, Distiller

    settings = dict(teacher="sala-als", data=[data], spheres_per_batch=1, max_steps=2, log_every=1,
                    cache_dir=str(tmp_path / "cache"), cross_points=256)
    settings.update(overrides)
    cfg = DistillConfig.from_preset("als-salanet-xyz-tiny", settings)
    return Distiller(cfg, tmp_path / "run")


def test_gradients_reach_only_the_student_and_its_heads(tmp_path, halves):
    d = _distiller(tmp_path, halves[0])
    batch = d.sampler.sample_batch(np.random.default_rng(0)).to("cpu")
    loss, logits, terms = d.compute_loss(batch)
    names = {"ce", "kd", "point", "voxel", "channel", "cross"}
    # a logged step also carries each weighted term's gradient norm on the student's features
    assert set(terms) == {f"loss_{k}" for k in names} | ({f"grad_{k}" for k in names} if d.cfg.log_every == 1 else set())
    assert all(math.isfinite(v) for v in terms.values())
    assert all(terms[f"grad_{k}"] > 0 for k in names if f"grad_{k}" in terms)
    loss.backward()
    assert all(p.grad is None for p in d.teacher.model.parameters())
    assert not any(p.requires_grad for p in d.teacher.model.parameters())
    assert all(p.grad is not None for p in d.auxiliary.parameters())
    assert sum(p.grad is not None and p.grad.abs().sum() > 0 for p in d.model.parameters()) > 0.9 * len(list(d.model.parameters()))
    # the heads never reach the student's checkpoint
    d.save()
    from pcseg.models.checkpoint import load_checkpoint

    ck = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert set(ck.model.state_dict()) == set(d.model.state_dict())
    assert ck.card["teacher"]["name"] == "sala-als" and ck.card["params_ratio"] > 8
    # the card's command reruns the distillation (not a plain `pcseg train`, which knows no teacher)
    import shlex

    cmd = shlex.split(ck.card["training"]["command"])
    assert cmd[:4] == ["pcseg", "distill", "--teacher", "sala-als"] and "-o" in cmd and "--student" in cmd
    assert not any(a.startswith(("teacher=", "features=", "dl0=")) for a in cmd)


def test_switched_off_terms_are_not_computed(tmp_path, halves):
    d = _distiller(tmp_path, halves[0], weights={"point": 0, "voxel": 0, "channel": 0, "cross": 0})
    _, _, terms = d.compute_loss(d.sampler.sample_batch(np.random.default_rng(0)).to("cpu"))
    assert {k for k in terms if k.startswith("loss_")} == {"loss_ce", "loss_kd"}
    assert {k for k in terms if k.startswith("grad_")} <= {"grad_ce", "grad_kd"}


def test_short_distillation_lowers_the_kl_on_a_real_tile(tmp_path, halves):
    d = _distiller(tmp_path, halves[0], max_steps=24, optimizer="adamw", lr=5e-3, weight_decay=0.0,
                   weights={"ce": 0, "point": 0, "voxel": 0, "channel": 0, "cross": 0}, augmentation="none")
    probe = [d.sampler.sample_batch(np.random.default_rng(100 + k)).to("cpu") for k in range(2)]

    def kl() -> float:
        with torch.no_grad():
            return float(np.mean([d.compute_loss(b)[2]["loss_kd"] for b in probe]))

    before = kl()
    d.train()
    after = kl()
    assert after < 0.7 * before, (before, after)


def test_teacher_cache_gives_teacher_outputs_for_the_batch_points(tmp_path, halves):
    d = _distiller(tmp_path, halves[0], teacher_cache=True)
    batch = d.sampler.sample_batch(np.random.default_rng(0)).to("cpu")
    z_t, f_t = d._teacher_outputs(batch)
    assert z_t.shape == (len(batch.points[0]), 6) and f_t.shape[1] == 18   # sala-als: 6 classes, 18-wide last features
    # the cached logits agree with the teacher's own predictions on most points (spheres differ at borders)
    from pcseg.engine.distill import with_limits

    with torch.no_grad():
        live = d.teacher.model(with_limits(batch, d.teacher_spec.neighbor_limits))
    assert (live.argmax(1) == z_t.argmax(1)).float().mean() > 0.8


def test_distill_cli_writes_a_segmentable_student_with_its_comparison(tmp_path, halves, monkeypatch, capsys):
    from pcseg.cli.main import main

    monkeypatch.setenv("PCSEG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "student"
    code = main(["distill", "--teacher", "sala-als", "--student", "als-salanet-xyz-tiny", "-d", halves[0], "--val",
                 halves[1], "--max-steps", "2", "--run-dir", str(tmp_path / "run"), "-o", str(out), "-q",
                 "spheres_per_batch=1", "cross_points=256"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == str(out) + ".safetensors"
    assert main(["models", "info", str(out) + ".safetensors", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["teacher"]["name"] == "sala-als" and card["params"] < card["teacher"]["params"] / 8
    cmp = card["comparison"]
    assert set(cmp) >= {"teacher", "distilled", "measured_on"} and cmp["measured_on"] == [halves[1]]
    assert cmp["teacher"]["miou"] > 0.2 and card["speed_ratio"] > 0
    assert main(["segment", halves[1], "--model", str(out) + ".safetensors", "-o", str(tmp_path / "seg.laz"),
                 "--votes", "1", "-q"]) == 0


@pytest.mark.parametrize("args, message", [
    (["distill", "--student", "als-salanet-xyz-tiny", "-o", "x"], "pass --teacher"),
    (["distill", "--teacher", "sala-als", "-o", "x"], "pass --student"),
    (["distill", "--teacher", "sala-als", "--student", "als-salanet-xyz-tiny", "-o", "x", "-d", str(EXAMPLE),
      "weights.kl=1"], "unknown loss term kl"),
    (["distill", "--teacher", "no-such-model", "--student", "als-salanet-xyz-tiny", "-o", "x", "-d", str(EXAMPLE)],
     "no model 'no-such-model'"),
])
def test_distill_usage_errors_are_one_line(args, message, tmp_path, capsys):
    from pcseg.cli.main import main

    code = main(args + ["--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_partial_labels_distill_by_their_marginal_likelihood(tmp_path, halves):
    """A ground / not-ground file in the training data: CE is the marginal likelihood over the allowed set, and
    the allowed sets (which also restrict Eq. 3's class) match the numpy definition."""
    from pcseg.data.classmaps import partial_label
    from pcseg.nn.losses import allowed_classes, partial_cross_entropy

    d = _distiller(tmp_path, halves[0], weights={"point": 0, "voxel": 0, "channel": 0, "cross": 0})
    batch = d.sampler.sample_batch(np.random.default_rng(0)).to("cpu")
    k = d.class_map.num_classes
    not_first = partial_label(range(1, k))
    batch.labels = batch.labels.clone()
    batch.labels[::2] = not_first
    _, z_s, terms = d.compute_loss(batch)
    assert math.isclose(terms["loss_ce"], float(partial_cross_entropy(z_s.detach(), batch.labels)), rel_tol=1e-5)
    allowed = allowed_classes(batch.labels, k)
    assert not allowed[::2, 0].any() and allowed[::2, 1:].all()
    from pcseg.data.classmaps import partial_masks

    assert np.array_equal(allowed.numpy(), partial_masks(batch.labels.numpy(), k))
