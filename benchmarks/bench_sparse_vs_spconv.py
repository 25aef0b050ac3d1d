"""pcseg's pure-PyTorch sparse 3D backbone (``focals-centerpoint``) against spconv's CPU build, same voxels.

spconv runs OpenPCDet's ``VoxelBackBone8x`` topology, cut to pcseg's own layer list and channel widths so that
both sides do the same work. spconv is never a pcseg dependency: install it in a separate virtual environment
that sees the system torch, and run this script with that environment's Python. Without spconv the script
prints one line saying how to install it, and exits 0.

    python -m venv --system-site-packages /tmp/spv && /tmp/spv/bin/pip install spconv   # 2.3.8 CPU + cumm
    nice -n 5 env OMP_NUM_THREADS=1 /tmp/spv/bin/python benchmarks/bench_sparse_vs_spconv.py \\
        [--frame FILE] [--threads 1] [--repeats 7] [--weights focals-kitti] [--json out.json]

Input. One KITTI frame (default ``../shared/data/kitti/training/velodyne/000001.bin``), voxelised once by
:func:`pcseg.nn.sparse.voxelize` with the detector's preset (``--preset cpu``: range [0, -32, -3, 64, 32, 1] m,
voxel 0.1 x 0.1 x 0.2 m, grid (Z, Y, X) = (20, 640, 640); ``--preset kitti``: the usual KITTI grid), features the
mean of the points' (x, y, z, intensity) in each voxel (OpenPCDet's MeanVFE). Both sides get these very
coordinates ``(batch, z, y, x)`` and features, and the same spatial shape (OpenPCDet adds one z cell,
``grid_size[::-1] + [1, 0, 0]``; pcseg does not, and neither side does here). Voxelisation is timed once, apart
(it is the same code for both).

Layer list (each conv: no bias, then BatchNorm1d and ReLU; SubM = submanifold 3x3x3, SpConv = regular sparse
3x3x3 conv; channels ``channels`` of the detector, default 16/32/64/64; C_in = 4):

    stage      pcseg (FocalsCenterPoint)  spconv (OpenPCDet VoxelBackBone8x name)   out grid (cpu preset)
    stem       SubM C_in -> 16            conv_input  SubMConv3d   indice_key subm1  20 x 640 x 640
    stage1     SubM 16 -> 16              conv1       SubMConv3d   subm1             20 x 640 x 640
    stage2     SpConv 16 -> 32 s2 p1      conv2       SparseConv3d spconv2           10 x 320 x 320
               SubM 32 -> 32 (x2)                     SubMConv3d   subm2
    stage3     SpConv 32 -> 64 s2 p1      conv3       SparseConv3d spconv3            5 x 160 x 160
               SubM 64 -> 64 (x2)                     SubMConv3d   subm3
    stage4     SpConv 64 -> 64 s2 p(0,1,1) conv4      SparseConv3d spconv4            2 x  80 x  80
               SubM 64 -> 64 (x2)                     SubMConv3d   subm4

Where they differ, pcseg's list wins: OpenPCDet's ``conv_out`` (SparseConv3d 64 -> 128, kernel (3, 1, 1), stride
(2, 1, 1)) has no counterpart in pcseg (it stacks stage 4's z cells into the BEV map directly) and is left out;
BatchNorm eps is pcseg's 1e-5 (OpenPCDet: 1e-3, momentum 0.01; no effect on time). pcseg's detector ends
stages 1-3 with a focal sparse conv by default (``focal=True``): the row ``pcseg + focal`` runs them too (no
spconv counterpart: spconv has no focal conv, and its output voxels differ).

Weights. pcseg's modules are built with ``torch.manual_seed(--seed)`` (their own init) and copied into the
spconv modules (pcseg's (K, C_in, C_out), K with z slowest, is spconv's KRSC (C_out, kz, ky, kx, C_in)), so both
compute the same function: the script checks the active voxels of every stage (same count and same coordinate
set, a warning if not) and the largest difference of the stage 4 features. ``--weights NAME|PATH`` takes a
trained detector instead (e.g. the shipped ``focals-kitti``, whose focal convs then dilate as trained: 1-4% of
the voxels "important", into 4-8 of the 27 offsets; with random weights 14-73% are, into 15-23 offsets, so the
random-weight focal row overstates the focal convs' cost).

Timing. Eval mode, ``torch.inference_mode``; each call starts from a fresh input tensor (no kernel map or
indice pairs kept from an earlier call, on either side). Two warm-up calls of each, then ``--repeats`` rounds
in which each side runs once, the order rotated every round; medians in ms, the ratio to spconv, the torch
thread count and the 1-minute load average before and after. Training: the stock spconv 2.3.8 CPU wheel
cannot run a backward pass (its ``indice_conv_backward`` asks ``torch.cuda.current_stream()`` before its own
CPU branch, which fails on a CPU-only torch); the script probes that on a small tensor and says so. Only if
the probe passes (another spconv, or ``--patch-spconv-backward``, which replaces spconv's stream getter by a
function returning 0 for CPU tensors, its CPU branch never reading the stream) are training-step rows added:
train mode, forward + mean-square loss of the stage 4 features + backward, from fresh tensors; the conv weight
gradients of both sides are then compared in float64 (in float32 the train-mode batch norms, which sum the same
rows in another order, leave differences of up to ~1e-2 relative in the early layers' gradients).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FRAME = REPO.parent / "shared" / "data" / "kitti" / "training" / "velodyne" / "000001.bin"
sys.path.insert(0, str(REPO))          # benchmark the working tree's pcseg, from any environment

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

INSTALL = ("python -m venv --system-site-packages /tmp/spv && /tmp/spv/bin/pip install spconv, then run this "
           "script with /tmp/spv/bin/python")
STAGES = ("stem", "stage1", "stage2", "stage3", "stage4")
SPCONV_NAMES = ("conv_input", "conv1", "conv2", "conv3", "conv4")


# ---------------------------------------------------------------------------------------------------- pcseg side
def pcseg_backbone(model, x, focal: bool, counts: list | None = None):
    """stem, stage1, [focal 1], stage2, [focal 2], stage3, [focal 3], stage4 of ``FocalsCenterPoint.forward``."""
    x = model.stem(x)
    if counts is not None:
        counts.append(x)
    x = model.stage1(x)
    if counts is not None:
        counts.append(x)
    for i, stage in enumerate((model.stage2, model.stage3, model.stage4)):
        if focal and i < len(model.focal_convs):
            x = model.focal_convs[i](x).out
        x = stage(x)
        if counts is not None:
            counts.append(x)
    return x


def pcseg_convs(module) -> list:
    """(conv, batch norm) pairs of a backbone stage (or of the plain backbone of a detector), in order."""
    from pcseg.nn.sparse import SparseBatchNorm, SparseConv3d, SubMConv3d

    mods = [getattr(module, s) for s in STAGES] if hasattr(module, "stem") else [module]
    out, conv = [], None
    for stage in mods:
        for m in stage.modules():
            if isinstance(m, (SubMConv3d, SparseConv3d)):
                conv = m
            elif isinstance(m, SparseBatchNorm):
                out.append((conv, m))
    return out


# --------------------------------------------------------------------------------------------------- spconv side
def spconv_backbone(spconv_t, model) -> nn.Module:
    """OpenPCDet's VoxelBackBone8x (conv_input .. conv4, no conv_out) with pcseg's widths, pcseg's weights."""
    from pcseg.nn.sparse import SparseConv3d

    layers = []
    for s, stage in enumerate(STAGES):
        seq = []
        for conv, bn in pcseg_convs(getattr(model, stage)):
            cin, cout, k = conv.in_channels, conv.out_channels, conv.kernel_size
            if isinstance(conv, SparseConv3d):
                sc = spconv_t.SparseConv3d(cin, cout, k, conv.stride, conv.padding, bias=False,
                                           indice_key=f"spconv{s}")
            else:
                sc = spconv_t.SubMConv3d(cin, cout, k, padding=tuple(a // 2 for a in k), bias=False,
                                         indice_key=f"subm{max(s, 1)}")
            with torch.no_grad():
                if tuple(sc.weight.shape) != (cout, *k, cin):
                    raise RuntimeError(f"unexpected spconv weight layout {tuple(sc.weight.shape)}")
                w = conv.weight.detach().reshape(*k, cin, cout)                 # (kz, ky, kx, C_in, C_out)
                sc.weight.copy_(w.permute(4, 0, 1, 2, 3))
            norm = nn.BatchNorm1d(cout, eps=bn.eps, momentum=bn.momentum)
            norm.load_state_dict(bn.state_dict())
            seq.append(spconv_t.SparseSequential(sc, norm, nn.ReLU()))
        layers.append((SPCONV_NAMES[s], spconv_t.SparseSequential(*seq)))
    return spconv_t.SparseSequential(OrderedDict(layers))


def probe_spconv_backward(spconv_t) -> str | None:
    """None when a SubM and a strided spconv layer can differentiate on CPU, else the error (one line)."""
    g = torch.Generator().manual_seed(0)
    idx = torch.unique(torch.randint(0, 12, (300, 3), generator=g), dim=0).int()
    idx = torch.cat([torch.zeros(len(idx), 1, dtype=torch.int32), idx], 1)
    feats = torch.randn(len(idx), 4, generator=g, requires_grad=True)
    net = spconv_t.SparseSequential(spconv_t.SubMConv3d(4, 8, 3, padding=1, bias=False, indice_key="p"),
                                    spconv_t.SparseConv3d(8, 8, 3, 2, 1, bias=False))
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its dump
            net(spconv_t.SparseConvTensor(feats, idx, [12, 12, 12], 1)).features.square().sum().backward()
    except Exception as e:  # noqa: BLE001 - any failure means: cannot train here
        return f"{type(e).__name__}: {e}".splitlines()[0]
    if feats.grad is None or not torch.isfinite(feats.grad).all():
        return "backward gave no gradient"
    return None


def patch_spconv_backward() -> None:
    """spconv 2.3.8's indice_conv_backward calls get_current_stream() (torch.cuda.current_stream()) before its
    CPU branch, which never uses the stream: answer 0 when CUDA is not there."""
    import spconv.pytorch.ops as ops

    original = ops.get_current_stream
    ops.get_current_stream = lambda: original() if torch.cuda.is_available() else 0


def gradient_check(spconv_t, model, feats, coords, shape) -> float:
    """Largest relative difference of the conv weight gradients, pcseg vs spconv, in float64 (train mode, same
    weights, loss mean(stage 4 features^2)). In float32 the two differ by up to ~1e-2 relative: the train-mode
    batch norms sum the same rows in another order, and their backward cancels; float64 shows the real gap."""
    from pcseg.nn.sparse import SparseTensor, SubMConv3d

    ref = copy.deepcopy(model).double().train()
    net = spconv_backbone(spconv_t, ref).double().train()
    f = feats.double()
    a = pcseg_backbone(ref, SparseTensor(f, coords, shape, 1), False)
    b = net(spconv_t.SparseConvTensor(f, coords.int(), list(shape), 1))
    a.features.square().mean().backward()
    b.features.square().mean().backward()
    ours = [c for c, _ in pcseg_convs(ref)]
    theirs = [m for m in net.modules() if isinstance(m, (spconv_t.SubMConv3d, spconv_t.SparseConv3d))]
    worst = 0.0
    for c, sc in zip(ours, theirs, strict=True):
        ga = c.weight.grad
        gb = sc.weight.grad.permute(1, 2, 3, 4, 0).reshape(ga.shape)
        worst = max(worst, float((ga - gb).abs().max() / ga.abs().max().clamp_min(1e-300)))
        assert isinstance(c, SubMConv3d) == isinstance(sc, spconv_t.SubMConv3d)
    return worst


# -------------------------------------------------------------------------------------------------------- helpers
def load_avg() -> float:
    return os.getloadavg()[0]


def sorted_rows(coords: torch.Tensor) -> torch.Tensor:
    c = coords.long()
    key = ((c[:, 0] * 4096 + c[:, 1]) * 4096 + c[:, 2]) * 4096 + c[:, 3]
    return torch.argsort(key)


def time_rounds(fns: dict, warmup: int, repeats: int) -> dict:
    """Warm-up, then ``repeats`` rounds running each function once, order rotated every round. ms per call."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - t) * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frame", default=str(DEFAULT_FRAME), help="KITTI velodyne .bin (x, y, z, intensity)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls of each side first (default 2)")
    ap.add_argument("--preset", choices=("cpu", "kitti"), default="cpu", help="detector grid preset (default cpu)")
    ap.add_argument("--weights", default=None, help="a trained detector (name or path) instead of random weights")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    ap.add_argument("--patch-spconv-backward", action="store_true",
                    help="unblock spconv's CPU backward (see the docstring) and add training-step rows")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args()

    try:
        import spconv
        import spconv.pytorch as spconv_t
    except ImportError:
        print(f"spconv is not installed (it is never a pcseg dependency): {INSTALL}")
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 - a broken install skips too
        print(f"spconv failed to import ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              f"skipped. Install: {INSTALL}")
        sys.exit(0)

    torch.set_num_threads(args.threads)
    from pcseg.io.kitti import read_velodyne
    from pcseg.models import build
    from pcseg.models.detector import PRESETS
    from pcseg.nn.sparse import SparseTensor, voxelize

    load_start = load_avg()
    if args.weights:
        from pcseg.engine.detect import load_detector

        model, _ = load_detector(args.weights)
        weights = args.weights
    else:
        torch.manual_seed(args.seed)
        model = build("focals-centerpoint", **PRESETS[args.preset])
        weights = f"random (seed {args.seed})"
    model.eval()
    has_focal = len(model.focal_convs) > 0 and not model.fusion

    points = read_velodyne(args.frame)[:, : model.in_features]
    pts = torch.from_numpy(np.ascontiguousarray(points))
    t = time.perf_counter()
    x0 = voxelize([pts], model.point_range, model.voxel_size)
    t_vox = (time.perf_counter() - t) * 1e3
    base_cache = dict(x0.cache)                     # what voxelize hands over: the sorted keys, nothing more
    feats, coords, shape = x0.features, x0.coords, x0.spatial_shape
    coords32 = coords.int().contiguous()

    def pcseg_input():
        return SparseTensor(feats, coords, shape, 1, cache=dict(base_cache))

    def spconv_input(f=feats):
        return spconv_t.SparseConvTensor(f, coords32, list(shape), 1)

    net = spconv_backbone(spconv_t, model).eval()
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY") if k in os.environ}
    print(f"frame {args.frame}: {len(points):,} points -> {len(coords):,} voxels, grid (Z, Y, X) {shape}, "
          f"C_in {feats.shape[1]}; channels {model.channels}; weights {weights}")
    print(f"spconv {spconv.__version__} (CPU build), torch {torch.__version__}, torch threads "
          f"{torch.get_num_threads()}, {env or 'no OMP variables set'}; load average {load_start:.2f}")

    # ---------------------------------------------------------------- same function, same voxels?
    with torch.inference_mode():
        p_stages = []
        p_out = pcseg_backbone(model, pcseg_input(), False, p_stages)
        s_stages, y = [], spconv_input()
        for name in SPCONV_NAMES:
            y = getattr(net, name)(y)
            s_stages.append(y)
        f_stages = []
        if has_focal:
            pcseg_backbone(model, pcseg_input(), True, f_stages)
    warnings = []
    for stage, a, b in zip(STAGES, p_stages, s_stages):
        same_shape = list(a.spatial_shape) == list(b.spatial_shape)
        same_set = len(a.coords) == len(b.indices) and torch.equal(
            a.coords[sorted_rows(a.coords)], b.indices.long()[sorted_rows(b.indices)])
        if not (same_shape and same_set):
            warnings.append(f"{stage}: pcseg {len(a.coords):,} voxels {tuple(a.spatial_shape)}, spconv "
                            f"{len(b.indices):,} voxels {tuple(b.spatial_shape)}"
                            + ("" if same_set or len(a.coords) != len(b.indices) else ", different coordinates"))
    fa = p_out.features[sorted_rows(p_out.coords)]
    fb = s_stages[-1].features[sorted_rows(s_stages[-1].indices)]
    max_diff = float((fa - fb).abs().max()) if fa.shape == fb.shape else float("nan")
    scale = float(fa.abs().max()) if len(fa) else 0.0
    voxels = {"pcseg": [len(s.coords) for s in p_stages], "spconv": [len(s.indices) for s in s_stages]}
    if f_stages:
        voxels["pcseg + focal"] = [len(s.coords) for s in f_stages]
    print("active voxels per stage (" + ", ".join(STAGES) + "):")
    for name, v in voxels.items():
        print(f"  {name:<14} " + " / ".join(f"{n:,}" for n in v))
    print(f"  stage 4 features, same weights: max |pcseg - spconv| = {max_diff:.2e} "
          f"(relative to max |value| {scale:.2e}: {max_diff / max(scale, 1e-30):.1e})")
    for w in warnings:
        print(f"WARNING: active voxels differ at {w}")
    if not warnings:
        print("  active voxels: same count and same coordinates at every stage on both sides")

    # ---------------------------------------------------------------- forward timing
    fns = {"spconv": lambda: net(spconv_input()),
           "pcseg": lambda: pcseg_backbone(model, pcseg_input(), False)}
    if has_focal:
        fns["pcseg + focal"] = lambda: pcseg_backbone(model, pcseg_input(), True)
    with torch.inference_mode():
        times = time_rounds(fns, args.warmup, args.repeats)
    load_end = load_avg()

    # ---------------------------------------------------------------- training step, if spconv can
    if args.patch_spconv_backward:
        patch_spconv_backward()
    train_error = probe_spconv_backward(spconv_t)
    train_times, grad_diff = None, None
    if train_error is None:
        model.train()
        net.train()
        params = [p for p in model.parameters()] + list(net.parameters())

        def step(out_features):
            out_features.square().mean().backward()
            for p in params:
                p.grad = None

        tfns = {"spconv": lambda: step(net(spconv_input()).features),
                "pcseg": lambda: step(pcseg_backbone(model, pcseg_input(), False).features)}
        if has_focal:
            tfns["pcseg + focal"] = lambda: step(pcseg_backbone(model, pcseg_input(), True).features)
        grad_diff = gradient_check(spconv_t, model, feats, coords, shape)
        train_times = time_rounds(tfns, args.warmup, args.repeats)
        model.eval()
        net.eval()
        load_end = load_avg()

    # ---------------------------------------------------------------- report
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"\nvoxelisation (pcseg.nn.sparse.voxelize, shared input of both sides, once): {t_vox:.0f} ms")
    print(f"forward, eval, inference_mode: median of {args.repeats} rounds after {args.warmup} warm-up calls; "
          f"torch threads {torch.get_num_threads()}; load average {load_start:.2f} -> {load_end:.2f}")
    print("| side | ms per forward (median) | min-max ms | vs spconv |")
    print("|---|---|---|---|")
    for n, v in times.items():
        print(f"| {n} | {med[n]:.1f} | {min(v):.1f}-{max(v):.1f} | {med[n] / med['spconv']:.2f}x |")
    tmed = None
    if train_times is None:
        print(f"\ntraining step: spconv {spconv.__version__} cannot train on this CPU build ({train_error}); "
              f"forward only")
    else:
        tmed = {n: statistics.median(v) for n, v in train_times.items()}
        how = " (backward unblocked by --patch-spconv-backward)" if args.patch_spconv_backward else ""
        print(f"\ntraining step{how}: train mode, forward + mean-square loss + backward; conv weight "
              f"gradients in float64, largest relative difference pcseg vs spconv {grad_diff:.1e}")
        print("| side | ms per step (median) | min-max ms | vs spconv |")
        print("|---|---|---|---|")
        for n, v in train_times.items():
            print(f"| {n} | {tmed[n]:.1f} | {min(v):.1f}-{max(v):.1f} | {tmed[n] / tmed['spconv']:.2f}x |")

    if args.json:
        figures = {
            "frame": args.frame, "points": int(len(points)), "voxels": int(len(coords)), "grid_zyx": list(shape),
            "in_channels": int(feats.shape[1]), "channels": model.channels, "weights": weights,
            "preset": None if args.weights else args.preset,
            "point_range": model.point_range, "voxel_size": model.voxel_size,
            "spconv_version": spconv.__version__, "torch_version": torch.__version__,
            "threads": torch.get_num_threads(), "env": env, "load_average": [load_start, load_end],
            "repeats": args.repeats, "warmup": args.warmup, "voxelize_ms": t_vox,
            "stages": list(STAGES), "active_voxels": voxels, "voxel_warnings": warnings,
            "stage4_max_abs_diff": max_diff, "stage4_max_abs": scale,
            "forward_ms": {n: {"median": med[n], "all": times[n], "vs_spconv": med[n] / med["spconv"]}
                           for n in times},
            "train_step_ms": None if train_times is None else {
                n: {"median": tmed[n], "all": train_times[n], "vs_spconv": tmed[n] / tmed["spconv"]}
                for n in train_times},
            "spconv_can_train": train_error is None, "spconv_train_error": train_error,
            "spconv_backward_patched": bool(args.patch_spconv_backward), "train_grad_rel_diff": grad_diff,
        }
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
