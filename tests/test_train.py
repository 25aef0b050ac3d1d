"""Training: a tiny real run lowers the loss, checkpoints load, resume is exact (also after SIGKILL), DDP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pcseg.engine.train import Trainer, TrainConfig
from pcseg.errors import BadInputError, UsageError
from pcseg.models.checkpoint import load_checkpoint

# Two real IGN LiDAR HD tiles (not the README's validation tiles).
TILES = ("test_data_77050_627755_LA93_IGN69.laz", "test_data_77055_627760_LA93_IGN69.laz")


def tiny(**over) -> TrainConfig:
    base = dict(model="salanet", model_options={"width": 8, "groups": 2}, features=["one", "intensity", "z"],
                dl0=1.0, sphere_radius=15.0, class_map="asprs", augmentation="kpconv", optimizer="adamw", lr=5e-3,
                weight_decay=0.0, steps_per_epoch=1000, spheres_per_batch=2, log_every=1, seed=0)
    base.update(over)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiles(shared_data):
    return [str(shared_data / "als" / t) for t in TILES]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PCSEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def records(run_dir):
    return [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]


def test_tiny_run_on_two_real_tiles_lowers_the_loss(tiles, tmp_path):
    trainer = Trainer(tiny(data=tiles, max_steps=40), tmp_path / "run")
    result = trainer.train()
    losses = [r["loss"] for r in records(tmp_path / "run") if "loss" in r]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8]), losses
    ck = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert ck.card["classes"]["name"] == "asprs" and ck.card["features"] == ["one", "intensity", "z"]
    assert ck.card["training"]["steps"] == 40 and result["steps"] == 40
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(ck.model.state_dict()[k], v.cpu()), k


def test_color_drop_setting_reaches_the_sampler_and_the_card(shared_data, tmp_path):
    room = str(shared_data / "indoor" / "scannet_scene0000_00.ply")
    cfg = tiny(data=[room], features=["one", "rgb", "z"], class_map="nyu40-to-s3dis", dl0=0.2, sphere_radius=2.0,
               augmentation="sala-s3dis", color_drop=0.5, max_steps=1)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.train()
    assert trainer.augmentation.color_drop == 0.5
    ck = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert ck.card["color_drop"] == 0.5
    # the model segments the room with its colour removed (zero colour, as in the dropped spheres)
    from pcseg.engine.infer import segment_points
    from pcseg.io import PointCloud, read

    cloud = read(room)
    bare = PointCloud(cloud.xyz[::20], {k: v[::20] for k, v in cloud.fields.items() if k not in ("red", "green", "blue")})
    assert len(segment_points(ck, bare, votes=1).labels) == len(bare)
    from pcseg.engine.quality import measure_quality

    q = measure_quality(ck, [f"{room}:nyu40:nyu40-to-s3dis"], votes=1, without_color=True)
    assert 0.5 * len(cloud) < q["per_file"]["scannet_scene0000_00.ply"]["points"] <= len(cloud)  # labelled points
    ck.card.pop("color_drop")  # a model that never saw colourless spheres refuses the same file
    with pytest.raises(BadInputError, match="rgb"):
        measure_quality(ck, [f"{room}:nyu40:nyu40-to-s3dis"], votes=1, without_color=True)
    with pytest.raises(UsageError, match="color_drop"):
        Trainer(tiny(data=[room], features=["one", "rgb"], class_map="nyu40-to-s3dis", dl0=0.2, sphere_radius=2.0,
                     color_drop=1.5, max_steps=1), tmp_path / "bad").train()


def test_mixed_sources_give_the_target_taxonomy_whatever_their_order(shared_data, tmp_path):
    """ScanNet read through nyu40-to-s3dis beside rooms with S3DIS ids: the model's classes are the s3dis map
    (predictions decode to S3DIS ids, `--eval` reads S3DIS files), not the map of whichever came first."""
    room = str(shared_data / "indoor" / "scannet_scene0000_00.ply")
    for data in ([room, "synthetic:rooms:1"], ["synthetic:rooms:1", room]):
        cfg = tiny(data=data, features=["one", "z"], class_map="nyu40-to-s3dis", dl0=0.2, sphere_radius=2.0)
        trainer = Trainer(cfg, tmp_path / f"run{data[0] == room}")
        assert trainer.class_map.name == "s3dis"
        assert [s.class_map.name for s in trainer.train_sources] in (["nyu40-to-s3dis", "s3dis"],
                                                                     ["s3dis", "nyu40-to-s3dis"])
    # one source alone keeps its own map (a ScanNet-only model decodes to NYU40 codes, as before)
    solo = Trainer(tiny(data=[room], features=["one", "z"], class_map="nyu40-to-s3dis", dl0=0.2, sphere_radius=2.0),
                   tmp_path / "solo")
    assert solo.class_map.name == "nyu40-to-s3dis"


def test_bf16_on_the_cpu_runs_the_network_in_bfloat16_and_trains(tiles, tmp_path):
    """bf16=true: the network's matmuls run in bfloat16 under autocast (checked on a linear layer's output), the
    loss stays float32 and finite, and the weights stay float32."""
    trainer = Trainer(tiny(data=tiles, max_steps=6, bf16=True), tmp_path / "run")
    seen = []
    linear = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    batch = trainer.sampler.sample_batch(np.random.default_rng(0)).to(trainer.device)
    loss, logits, _ = trainer.compute_loss(batch)
    assert seen and seen[0] == torch.bfloat16 and logits.dtype == torch.float32 and torch.isfinite(loss)
    trainer.train()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(np.isfinite(r["loss"]) for r in records(tmp_path / "run") if "loss" in r)
    seen.clear()
    plain = Trainer(tiny(data=tiles, max_steps=1), tmp_path / "fp32")
    lin = next(m for m in plain.model.modules() if isinstance(m, torch.nn.Linear))
    lin.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    plain.compute_loss(batch)
    assert seen[0] == torch.float32                       # off by default on a CPU


def test_resume_continues_exactly(tiles, tmp_path):
    full = Trainer(tiny(data=tiles, max_steps=6, checkpoint_every=3), tmp_path / "full")
    full.train()
    part = Trainer(tiny(data=tiles, max_steps=3, checkpoint_every=3), tmp_path / "part")
    part.train()
    resumed = Trainer(tiny(data=tiles, max_steps=6, checkpoint_every=3), tmp_path / "part", resume=True)
    assert resumed.step == 3
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    la = [r["loss"] for r in records(tmp_path / "full") if "loss" in r]
    lb = [r["loss"] for r in records(tmp_path / "part") if "loss" in r]
    assert np.allclose(la, lb, atol=1e-5)


def test_worker_processes_build_the_same_batches_and_train_the_same_model(tiles, tmp_path):
    alone = Trainer(tiny(data=tiles, max_steps=5), tmp_path / "alone")
    alone.train()
    helped = Trainer(tiny(data=tiles, max_steps=5, workers=2), tmp_path / "helped")
    helped.train()
    a, b = alone.model.state_dict(), helped.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in records(tmp_path / "alone")] == [r["loss"] for r in records(tmp_path / "helped")]
    with pytest.raises(UsageError, match="workers must be 0 or more"):
        Trainer(tiny(data=tiles, max_steps=1, workers=-1), tmp_path / "bad")
    from pcseg.engine.train import resolve_workers

    assert resolve_workers(None, torch.device("cpu")) == 0 and resolve_workers(3, torch.device("cpu")) == 3
    assert 0 <= resolve_workers(None, torch.device("cuda")) <= 8  # by default, on a GPU: cores less two, at most 8
    # the prefetcher hands the batches of its seeds in order, as the sampler builds them
    from pcseg.engine.train import BatchPrefetcher

    seeds = [(0, 0, s) for s in (7, 3, 9)]
    direct = [alone.sampler.sample_batch(np.random.default_rng(seed)) for seed in seeds]
    fetched = BatchPrefetcher(alone.sampler, seeds, workers=2)
    try:
        got = list(fetched)
    finally:
        fetched.close()
    assert len(got) == 3
    for x, y in zip(direct, got):
        for name in ("points", "lengths", "neighbors", "pools", "upsamples"):
            assert all(np.array_equal(p, q) for p, q in zip(getattr(x, name), getattr(y, name))), name
        assert np.array_equal(x.labels, y.labels) and np.array_equal(x.features, y.features)


def test_time_limit_stops_after_the_step_that_passes_it_and_resume_goes_on(tiles, tmp_path):
    run = tmp_path / "run"
    result = Trainer(tiny(data=tiles, max_steps=50, time_limit=0.0), run).train()
    assert result["steps"] == 1                                    # the first step already passed 0 s
    assert load_checkpoint(run / "last.safetensors").card["training"]["steps"] == 1
    resumed = Trainer(tiny(data=tiles, max_steps=3), run, resume=True)
    assert resumed.step == 1 and resumed.train()["steps"] == 3
    # a machine setting, not part of the recipe: the card's command does not carry it
    assert "time_limit" not in load_checkpoint(run / "last.safetensors").card["training"]["command"]


def test_init_fine_tunes_from_a_checkpoint_and_refuses_another_network(tiles, tmp_path):
    base = Trainer(tiny(data=tiles, max_steps=3), tmp_path / "base")
    base.train()
    start = str(tmp_path / "base" / "last.safetensors")
    tuned = Trainer(tiny(data=tiles, max_steps=1, init=start), tmp_path / "tuned")
    before = load_checkpoint(start).model.state_dict()
    for k, v in tuned.model.state_dict().items():            # the run starts from the checkpoint's weights
        assert torch.equal(before[k], v.cpu()), k
    fresh = Trainer(tiny(data=tiles, max_steps=1), tmp_path / "fresh")
    assert not all(torch.equal(before[k], v.cpu()) for k, v in fresh.model.state_dict().items())
    tuned.train()
    card = load_checkpoint(tmp_path / "tuned" / "last.safetensors").card
    assert "init=" in card["training"]["command"] and not os.path.isabs(card["training"]["config"]["init"])
    with pytest.raises(UsageError, match="does not match"):      # another width: not this run's network
        Trainer(tiny(data=tiles, max_steps=1, init=start, model_options={"width": 12, "groups": 2}), tmp_path / "w")
    with pytest.raises(UsageError, match="classes"):            # another class set
        Trainer(tiny(data=tiles, max_steps=1, init=start, class_map="als", features=["one", "intensity", "z"]),
                tmp_path / "c")


def test_refuses_to_clobber_a_run_without_resume(tiles, tmp_path):
    from pcseg.errors import BadInputError, UsageError

    Trainer(tiny(data=tiles, max_steps=1), tmp_path / "r").train()
    with pytest.raises(UsageError, match="--resume"):
        Trainer(tiny(data=tiles, max_steps=2), tmp_path / "r")


def _cli(tiles, run_dir, steps, *extra):
    args = [sys.executable, "-m", "pcseg", "train", "--config", "als-salanet", "--run-dir", str(run_dir),
            "--max-steps", str(steps), "--quiet", "model_options.width=8", "dl0=1.0", "sphere_radius=15.0",
            "spheres_per_batch=2", "log_every=1", "checkpoint_every=2", "optimizer=adamw", "lr=0.005", *extra]
    for t in tiles:
        args += ["--data", t]
    return args


def test_sigkill_then_resume(tiles, tmp_path):
    run = tmp_path / "killed"
    env = {**os.environ, "PCSEG_CACHE": os.environ["PCSEG_CACHE"]}
    proc = subprocess.Popen(_cli(tiles, run, 1000), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = run / "last.state.safetensors"
    deadline = time.time() + 240
    while time.time() < deadline and not (state.exists() and len(records(run)) >= 4):
        time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from pcseg.models.checkpoint import load_state

    saved = load_state(state)["step"]
    assert saved >= 2
    r = subprocess.run([sys.executable, "-m", "pcseg", "train", "--run-dir", str(run), "--resume",
                        "--max-steps", str(saved + 2), "--quiet"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    steps = [rec["step"] for rec in records(run) if "loss" in rec]
    assert steps[-1] == saved + 2
    assert load_checkpoint(run / "last.safetensors").card["training"]["steps"] == saved + 2


def test_ddp_two_processes_on_cpu(tiles, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "pcseg"] + _cli(tiles, run, 3)[3:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [rec["step"] for rec in records(run) if "loss" in rec]
    assert steps == [1, 2, 3]  # rank 0 alone writes
    ck = load_checkpoint(run / "last.safetensors")
    assert ck.card["training"]["steps"] == 3


def test_init_widens_the_input_layer_for_appended_channels(tiles, tmp_path):
    """A run reading the init's channels plus new ones starts from the init: the old columns of the input layer
    are copied, the new ones are zero, so the widened network gives the init's logits whatever the new channels
    hold. A run whose channels are not the init's followed by new ones is still refused."""
    from pcseg.data.batch import build_batch

    Trainer(tiny(data=tiles, max_steps=2), tmp_path / "base").train()
    start = str(tmp_path / "base" / "last.safetensors")
    old = load_checkpoint(start).model.eval()
    said = []
    wide = Trainer(tiny(data=tiles, max_steps=1, init=start, features=["one", "intensity", "z", "echo"]),
                   tmp_path / "wide", echo=said.append)
    assert any("widened" in m for m in said)
    net = wide.model.eval()
    rng = np.random.default_rng(0)
    pts = rng.uniform(-10, 10, (3000, 3)).astype(np.float32)
    feats = rng.uniform(0, 1, (3000, 3)).astype(np.float32)
    extra = rng.uniform(0, 1, (3000, 4)).astype(np.float32)           # anything in the new channels
    with torch.no_grad():
        a = old(build_batch([pts], [feats], old.pyramid_spec).to("cpu"))
        b = net(build_batch([pts], [np.concatenate([feats, extra], 1)], net.pyramid_spec).to("cpu"))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(UsageError, match="does not match"):      # new channels first: not a widening
        Trainer(tiny(data=tiles, max_steps=1, init=start, features=["one", "echo", "intensity", "z"]),
                tmp_path / "front")
