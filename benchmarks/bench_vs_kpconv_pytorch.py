"""Forward and training-step time of pcseg's KP-FCNN against KPConv-PyTorch's, on identical batches.

The reference is the user's own checkout of HuguesTHOMAS/KPConv-PyTorch, given on the command line; nothing of it
is copied into pcseg and pcseg never depends on it. Without ``--kpconv-pytorch`` (or with a path that is not such
a checkout) the script prints one line saying what to pass and exits 0.

    git clone https://github.com/HuguesTHOMAS/KPConv-PyTorch /tmp/kpconv-pytorch     # any commit of it
    python benchmarks/bench_vs_kpconv_pytorch.py --kpconv-pytorch /tmp/kpconv-pytorch [--threads 2] [--rounds 3]

What runs. Only the checkout's ``models/`` (architectures.py, blocks.py, and the kernels/kernel_points.py and
utils/ modules they import) and ``utils/config.py`` are imported: its ``cpp_wrappers`` are not needed (nothing has
to be compiled), because pcseg builds every batch (:func:`pcseg.data.build_batch`) and the script converts it.
Its kernel_points.py imports matplotlib.pyplot and matplotlib.cm only to plot; where matplotlib is missing, they
are given empty stand-in modules (said on stderr). KPConv-PyTorch writes its kernel disposition
(``kernels/dispositions/k_015_center_3D.ply``, relative to the working directory) where it runs: its processes
run in a scratch folder, seeded with the checkout's file when it has one, so the checkout is never written to.

Batches. Real ScanNet spheres (scene0000_00 from ../shared/data, radius 2 m, 4 cm grid, the same draw as
bench_speed_vs_baseline.py / bench_train_step.py) filled up to 15k and 50k points, features 4 ones, 13
classes, random labels; the pyramid of pcseg's KP-FCNN (5 layers, dl_j = 4 cm * 2^j, radius 2.5 dl_j, 5 dl_j in
the deformable layers 3-5) with KPConv-PyTorch's calibrated neighbour caps ``--limits`` (default
[24, 36, 41, 39, 30]; for the deformable network ``--deform-limits``, by default the same caps, or ``auto``: the
0.9 quantile of the neighbourhood sizes met in these spheres at the deformable radii, the untouched ratio of
KPConv-PyTorch's calibration). The parent process builds each batch once and writes it to a scratch file; every
timing process loads that file, so both sides get the same arrays. pcseg's :class:`StackedBatch` maps onto
KPConv-PyTorch's batch (its datasets/common.py ``segmentation_inputs`` and S3DIS.py ``S3DISCustomBatch``),
whose conventions pcseg's follow (KPConv supp. A): per layer, ``points`` (N_l, 3) float32, ``neighbors``
(N_l, H_l) int64 with the shadow index N_l, ``pools`` (N_{l+1}, H_l) int64 into layer l (shadow N_l; the
reference gives the last layer a (0, 1) placeholder), ``upsamples``: the reference's (N_l, H) radius neighbours
among layer l+1 sorted by distance, of which its nearest upsampling reads column 0 only, becomes pcseg's nearest
point as one column (placeholder (0, 1) for the last layer), ``lengths`` int32 per cloud, then ``features``
(N_0, 4) float32 and ``labels`` (N_0,) int64. Caps keep the nearest neighbours on both sides (the reference's
``big_neighborhood_filter`` cuts its distance-sorted matrices; the pooling into layer l+1 uses layer l's cap).

Matched architecture ("pcseg's 10-block encoder with KPConv-PyTorch's decoder widths and head, conv radius
2.5 dl, the same parameter shapes on both sides": 16.36 M rigid, 17.22 M deformable):
- Encoder: pcseg's KP-FCNN encoder (width 64: a plain KPConv block, a bottleneck block, then per layer a
  strided and a plain bottleneck block) is, in KPConv-PyTorch's block language with first_features_dim 128,
  ``simple, resnetb, (resnetb_strided, resnetb) x 4``, and every KPConv, unary and shortcut has the same shape:
  the reference's ``simple`` maps the input to first_features_dim / 2 = 64 like pcseg's first block; its
  ``resnetb`` with output width E is unary in -> E/4, KPConv E/4 -> E/4, unary E/4 -> E, plus a unary shortcut
  when in != E, which is pcseg's bottleneck of width E/2; E = 128 * 2^j in layer j, pcseg's 2 D_j, and the
  strided block closing layer j keeps layer j's width on both sides (see pcseg/models/kpconv_nets.py). The
  reference's own S3DIS architecture has two plain blocks per layer (14 blocks); this one has pcseg's 10.
  Deformable: the last 5 blocks (``resnetb_deformable`` in layer 3, ``resnetb_deformable_strided`` into layer 4,
  and so on), as pcseg's ``deformable=True``; both sides then search layers 3-5 at 5 dl (``deform_radius`` 5 =
  pcseg's rho) and the reference's deformable KPConvs have the same offset branch (a rigid KPConv to 3K plus a
  bias) as pcseg's.
- Convolutions: K = 15, conv radius 2.5 dl (``conv_radius``), kernel influence dl (``KP_extent`` 1.0 = pcseg's
  Sigma), linear influence, sum aggregation, leaky ReLU 0.1, batch norm after every convolution.
- Decoder and head: KPConv-PyTorch's. Its four ``nearest_upsample, unary`` pairs map (2048 + 1024) -> 1024,
  (1024 + 512) -> 512, (512 + 256) -> 256, (256 + 128) -> 128, twice pcseg's own decoder widths; its head is a
  128 -> 128 linear map with a bias (no batch norm) and leaky ReLU, then 128 -> classes with a bias. pcseg's side
  is its KP-FCNN with that decoder and head put together from pcseg's UnaryBlock and torch Linear layers here.
The script counts the trainable parameters of both networks (the reference's kernel points are frozen
parameters; pcseg's are buffers) and refuses to compare when the counts differ; it also checks that the radii
the reference's configuration implies are the radii the batches were built with. The two networks compute the
same function: with the reference's weights and kernel points copied into pcseg's network (trainable parameters
in registration order, which is the same on both sides), eval logits on a converted batch agreed to 1e-8, rigid
and deformable, once the one semantic difference was aligned: the reference's strided max-pool shortcut counts
shadow neighbours as zero features, pcseg's ignores them (checked by hand when this script was written).

Timing. For every case (rigid and deformable at each size) each side runs in a fresh process, alternately
(A B, then B A, ...), ``--rounds`` times; each process warms up once and reports the median of ``--repeats``
forward passes (eval, torch.inference_mode) and training steps (train mode: forward, loss, backward, SGD
step with momentum 0.9). The loss is each side's own segmentation training loss: KPConv-PyTorch's ``net.loss``
(cross-entropy, plus its deformable-offset regularisation in the deformable network), pcseg's cross-entropy plus
``regularization_loss()`` (0 when rigid). Both sides get the same environment and ``--threads`` torch threads.
The table gives the medians over rounds and the ratio KPConv-PyTorch / pcseg (above 1: pcseg is faster), with
the thread count and the load average before and after: ratios are what to read on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCAN = HERE.parents[1] / "shared" / "data" / "indoor" / "scannet_scene0000_00.ply"

NUM_CLASSES = 13
IN_FEATURES = 4
DL0 = 0.04
FIRST_FEATURES = 128  # KPConv-PyTorch's first_features_dim for pcseg's width 64
NUM_LAYERS = 5
KPCONV_PYTORCH_LIMITS = [24, 36, 41, 39, 30]
CALIBRATION_QUANTILE = 0.9
DISPOSITION = Path("kernels") / "dispositions" / "k_015_center_3D.ply"

# pcseg's 10-block encoder in KPConv-PyTorch's block names; deformable: its last 5 blocks.
RIGID_ENCODER = ["simple", "resnetb"] + ["resnetb_strided", "resnetb"] * (NUM_LAYERS - 1)
DEFORMABLE_ENCODER = RIGID_ENCODER[:5] + ["resnetb_deformable", "resnetb_deformable_strided", "resnetb_deformable",
                                          "resnetb_deformable_strided", "resnetb_deformable"]
DECODER = ["nearest_upsample", "unary"] * (NUM_LAYERS - 1)
VARIANTS = ("rigid", "deformable")


# ----------------------------------------------------------------------------------------------- both sides
def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_arrays(path: str) -> dict:
    import numpy as np

    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def layer_list(arrays: dict, key: str) -> list:
    return [arrays[f"{key}{l}"] for l in range(NUM_LAYERS) if f"{key}{l}" in arrays]


def time_side(forward, loss, model, repeats: int) -> dict:
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def fwd():
        model.eval()
        with torch.inference_mode():
            forward()

    def step():
        model.train()
        value = loss(forward())
        opt.zero_grad()
        value.backward()
        opt.step()

    return {"forward": median_time(fwd, repeats), "train_step": median_time(step, repeats)}


# ------------------------------------------------------------------------------------------ KPConv-PyTorch
def _matplotlib_stand_in() -> bool:
    """kernels/kernel_points.py imports matplotlib.pyplot and matplotlib.cm to plot; without matplotlib, empty
    modules."""
    try:
        import matplotlib.pyplot  # noqa: F401
        return False
    except ImportError:
        import types

        mpl = types.ModuleType("matplotlib")
        for name in ("pyplot", "cm"):
            sub = types.ModuleType(f"matplotlib.{name}")
            setattr(mpl, name, sub)
            sys.modules[f"matplotlib.{name}"] = sub
        sys.modules["matplotlib"] = mpl
        return True


def reference_network(checkout: str, deformable: bool):
    """KPConv-PyTorch's KPFCNN with the matched configuration (its Config subclassed, as its train_*.py do)."""
    sys.path[:] = [checkout] + [p for p in sys.path if p not in ("", str(HERE), str(REPO))]
    if _matplotlib_stand_in():
        print("note: matplotlib is not installed; KPConv-PyTorch's kernel_points.py got an empty stand-in",
              file=sys.stderr)
    from models.architectures import KPFCNN
    from utils.config import Config

    class MatchedConfig(Config):
        dataset = "ScanNet-spheres"
        num_classes = NUM_CLASSES
        in_points_dim = 3
        in_features_dim = IN_FEATURES
        architecture = (DEFORMABLE_ENCODER if deformable else RIGID_ENCODER) + DECODER
        first_features_dim = FIRST_FEATURES
        use_batch_norm = True
        batch_norm_momentum = 0.02
        num_kernel_points = 15
        first_subsampling_dl = DL0
        conv_radius = 2.5
        deform_radius = 5.0
        KP_extent = 1.0
        KP_influence = "linear"
        aggregation_mode = "sum"
        fixed_kernel_points = "center"
        modulated = False
        class_w = []
        # deformable-offset loss settings of the reference's S3DIS configuration (newer and older versions)
        deform_fitting_mode = "point2point"
        deform_fitting_power = 1.0
        deform_lr_factor = 0.1
        repulse_extent = 1.2
        offsets_loss = "fitting"
        offsets_decay = 0.01

    config = MatchedConfig()
    net = KPFCNN(config, list(range(NUM_CLASSES)), [])
    radii = [DL0 * 2**l * (config.deform_radius if config.deform_layers[l] else config.conv_radius)
             for l in range(config.num_layers)]
    return net, config, radii


class ReferenceBatch:
    """The attributes KPConv-PyTorch's forward reads from its batch (S3DISCustomBatch), as torch tensors."""

    def __init__(self, arrays: dict):
        import numpy as np
        import torch

        t = torch.from_numpy
        none = np.zeros((0, 1), np.int64)  # the reference's placeholder for the last layer
        self.points = [t(p.astype(np.float32)) for p in layer_list(arrays, "points")]
        self.neighbors = [t(n.astype(np.int64)) for n in layer_list(arrays, "neighbors")]
        self.pools = [t(p.astype(np.int64)) for p in layer_list(arrays, "pools")] + [t(none)]
        self.upsamples = [t(u.astype(np.int64).reshape(-1, 1)) for u in layer_list(arrays, "upsamples")] + [t(none)]
        self.lengths = [t(n.astype(np.int32)) for n in layer_list(arrays, "lengths")]
        self.features = t(arrays["features"].astype(np.float32))
        self.labels = t(arrays["labels"].astype(np.int64))
        self.scales = self.rots = self.cloud_inds = self.center_inds = self.input_inds = None


def reference_child(checkout: str, deformable: bool, batch_file: str | None, repeats: int) -> dict:
    import numpy as np
    import torch

    np.random.seed(0)  # the reference draws its kernel rotations with numpy
    torch.manual_seed(0)
    net, config, radii = reference_network(checkout, deformable)
    out = {"params": trainable(net), "radii": radii}
    if batch_file is None:
        return out
    batch = ReferenceBatch(load_arrays(batch_file))
    out.update(time_side(lambda: net(batch, config), lambda logits: net.loss(logits, batch.labels), net, repeats))
    return out


# -------------------------------------------------------------------------------------------------- pcseg
def pcseg_network(deformable: bool):
    """pcseg's KP-FCNN (width 64) with KPConv-PyTorch's decoder widths and head, from pcseg's own blocks."""
    from torch import nn

    from pcseg.models import build
    from pcseg.models.kpconv_nets import LEAKY_SLOPE, UnaryBlock

    model = build("kpfcnn", num_classes=NUM_CLASSES, in_features=IN_FEATURES, deformable=deformable, dl0=DL0)
    encoder = model.encoder
    channels, decoder = encoder.out_channels, []
    for j in reversed(range(NUM_LAYERS - 1)):
        width = FIRST_FEATURES * 2**j
        decoder.append(UnaryBlock(channels + encoder.skip_channels[j], width))
        channels = width
    model.decoder = nn.ModuleList(decoder)
    model.head = nn.Sequential(nn.Linear(channels, FIRST_FEATURES), nn.LeakyReLU(LEAKY_SLOPE),
                               nn.Linear(FIRST_FEATURES, NUM_CLASSES))
    return model


def pcseg_child(deformable: bool, batch_file: str | None, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    from pcseg.data.batch import StackedBatch

    torch.manual_seed(0)
    model = pcseg_network(deformable)
    out = {"params": trainable(model), "radii": list(model.pyramid_spec.radii)}
    if batch_file is None:
        return out
    a = load_arrays(batch_file)
    batch = StackedBatch(points=layer_list(a, "points"), lengths=layer_list(a, "lengths"),
                         neighbors=layer_list(a, "neighbors"), pools=layer_list(a, "pools"),
                         upsamples=layer_list(a, "upsamples"), features=a["features"],
                         labels=a["labels"]).to("cpu")
    out.update(time_side(lambda: model(batch),
                         lambda logits: F.cross_entropy(logits, batch.labels) + model.regularization_loss(),
                         model, repeats))
    return out


# ------------------------------------------------------------------------------------------------- parent
def write_batch(path: Path, points: int, deformable: bool, limits: list[int] | str) -> tuple[list[int], list[int]]:
    """Build the batch with pcseg and save its arrays; returns (points per layer, caps used)."""
    import dataclasses

    import numpy as np

    from pcseg.data import build_batch
    from pcseg.data.spheres import calibrate_neighbor_limits

    sys.path.insert(0, str(HERE))
    from bench_train_step import spheres

    clouds = spheres(points)
    spec = pcseg_network(deformable).pyramid_spec
    if limits == "auto":
        limits = calibrate_neighbor_limits(clouds, spec, quantile=CALIBRATION_QUANTILE)
    spec = dataclasses.replace(spec, neighbor_limits=list(limits))
    rng = np.random.default_rng(0)
    b = build_batch(clouds, [np.ones((len(c), IN_FEATURES), np.float32) for c in clouds], spec,
                    [rng.integers(0, NUM_CLASSES, len(c)) for c in clouds])
    arrays = {"features": b.features, "labels": b.labels}
    for key in ("points", "neighbors", "pools", "upsamples", "lengths"):
        arrays.update({f"{key}{l}": np.asarray(x) for l, x in enumerate(getattr(b, key))})
    np.savez(path, **arrays)
    return [len(p) for p in b.points], list(limits)


def run_child(side: str, variant: str, batch_file: Path | None, args, checkout: str, scratch: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, variant,
           str(batch_file) if batch_file else "-", "--threads", str(args.threads), "--repeats", str(args.repeats),
           "--kpconv-pytorch", checkout]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MPLBACKEND": "Agg"}
    if side == "pcseg":
        env["PYTHONPATH"], cwd = str(REPO), str(REPO)
    else:
        env.pop("PYTHONPATH", None)
        cwd = str(scratch)  # where the reference reads and writes kernels/dispositions
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        tail = (out.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise RuntimeError(f"{side} {variant} failed: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def is_checkout(path: str | None) -> bool:
    return bool(path) and all((Path(path) / f).is_file() for f in
                              ("models/architectures.py", "models/blocks.py", "utils/config.py"))


def commit_of(path: str) -> str:
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else "no git"
    except OSError:
        return "no git"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kpconv-pytorch", metavar="PATH", help="a checkout of HuguesTHOMAS/KPConv-PyTorch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating A/B process pairs per case")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per process (after one warm-up)")
    ap.add_argument("--points", type=int, nargs="+", default=[15_000, 50_000])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--limits", type=int, nargs=NUM_LAYERS, default=KPCONV_PYTORCH_LIMITS,
                    help="neighbour caps per layer, rigid network (default: KPConv-PyTorch's %(default)s)")
    ap.add_argument("--deform-limits", nargs="+", default=None,
                    help="caps for the deformable network: 5 integers, or 'auto' (0.9 quantile at its radii); "
                         "default: the rigid caps")
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "VARIANT", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        side, variant, batch_file = args.child
        import torch

        torch.set_num_threads(args.threads)
        batch_file = None if batch_file == "-" else batch_file
        deformable = variant == "deformable"
        if side == "pcseg":
            result = pcseg_child(deformable, batch_file, args.repeats)
        else:
            result = reference_child(str(Path(args.kpconv_pytorch).resolve()), deformable, batch_file, args.repeats)
        print(json.dumps(result))
        return 0

    if not is_checkout(args.kpconv_pytorch):
        print("skipped: pass --kpconv-pytorch PATH, a checkout of https://github.com/HuguesTHOMAS/KPConv-PyTorch "
              "(only its models/ and utils/config.py are imported; nothing to compile)", file=sys.stderr)
        return 0
    if not SCAN.exists():
        print(f"skipped: {SCAN} is not there (the benchmark reads ../shared/data)", file=sys.stderr)
        return 0
    deform_limits: list[int] | str = args.limits
    if args.deform_limits == ["auto"]:
        deform_limits = "auto"
    elif args.deform_limits:
        if len(args.deform_limits) != NUM_LAYERS or not all(v.isdigit() for v in args.deform_limits):
            ap.error(f"--deform-limits takes {NUM_LAYERS} integers or 'auto'")
        deform_limits = [int(v) for v in args.deform_limits]
    checkout = str(Path(args.kpconv_pytorch).resolve())

    scratch = Path(tempfile.mkdtemp(prefix="bench-kpconv-pytorch-"))
    try:
        if (Path(checkout) / DISPOSITION).is_file():
            (scratch / DISPOSITION).parent.mkdir(parents=True)
            shutil.copy(Path(checkout) / DISPOSITION, scratch / DISPOSITION)
        return compare(args, checkout, scratch, deform_limits)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compare(args, checkout: str, scratch: Path, deform_limits) -> int:
    load = os.getloadavg()
    print(f"# KPConv-PyTorch {checkout} ({commit_of(checkout)}) vs pcseg {REPO} ({commit_of(str(REPO))})")
    print(f"# threads {args.threads}, load before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{args.rounds} alternating rounds x {args.repeats} timed calls per process, medians")
    for variant in args.variants:
        ref, ours = (run_child(side, variant, None, args, checkout, scratch) for side in ("reference", "pcseg"))
        print(f"# {variant}: parameters KPConv-PyTorch {ref['params']:,}, pcseg {ours['params']:,}")
        if ref["params"] != ours["params"]:
            print(f"refusing to compare {variant}: the networks differ ({ref['params']:,} vs {ours['params']:,} "
                  "trainable parameters)", file=sys.stderr)
            return 1
        if any(abs(a - b) > 1e-9 for a, b in zip(ref["radii"], ours["radii"])) or len(ref["radii"]) != NUM_LAYERS:
            print(f"refusing to compare {variant}: KPConv-PyTorch's radii {ref['radii']} are not the batches' "
                  f"{ours['radii']}", file=sys.stderr)
            return 1
    print(f"{'measure':34s} {'KPConv-PyTorch':>15s} {'pcseg':>9s} {'ratio':>6s}")
    for variant in args.variants:
        for points in args.points:
            batch_file = scratch / f"batch-{variant}-{points}.npz"
            sizes, caps = write_batch(batch_file, points, variant == "deformable",
                                      deform_limits if variant == "deformable" else args.limits)
            print(f"# {variant} {points}: points per layer {sizes}, neighbour caps {caps}")
            results = {"reference": [], "pcseg": []}
            for r in range(args.rounds):
                order = ("reference", "pcseg") if r % 2 == 0 else ("pcseg", "reference")
                for side in order:
                    results[side].append(run_child(side, variant, batch_file, args, checkout, scratch))
            for measure in ("forward", "train_step"):
                a = statistics.median(x[measure] for x in results["reference"])
                b = statistics.median(x[measure] for x in results["pcseg"])
                label = f"{variant} {points // 1000}k {measure.replace('_', ' ')}"
                print(f"{label:34s} {a:13.3f} s {b:7.3f} s {a / b:6.2f}")
            batch_file.unlink()
    load = os.getloadavg()
    print(f"# load after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
