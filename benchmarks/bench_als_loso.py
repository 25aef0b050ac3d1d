"""Leave one source out: how an airborne recipe does on a survey source it never trained on (issue #27, item 1).

The training files of a recipe (by default the command in ``sala-als-terrain``'s card: its ``-d`` files with
their class-map prefixes) fall into five sources:

- ``ign-dense``: IGN LiDAR HD tiles and crops (``test_data_*``, ``ign_*``), 10-60 points/m²;
- ``ign-sparse``: IGN's older sparse surveys (``test_semis_*``, ``Semis_*``), 0.05-0.3 points/m²;
- ``ahn3``: the Dutch AHN3 (``ahn3_*``), another sensor and labelling;
- ``samples``: PDAL / USGS / Polish sample files (``autzen``, ``sample_c``, ``mvk-thin``, ``warsaw_small``);
- ``forest``: the ground-only forest tiles of ``als_ground/``.

Runs (each ``pcseg train`` in a fresh process, same seed and schedule): ``all`` trains on every training file;
``without-SOURCE`` on every training file but that source's. Each source is scored on its files that no run
trains on (the validation files of bench_als_robustness.py that belong to it; ``--with-test`` adds its test files,
for a report once a recipe is chosen), with every run:

- in-source: the ``all`` run on the source's held-out files;
- left out: the ``without-SOURCE`` run on the same files.

The gap between them is what the source's absence from training costs; issue #27's goal is 5 points. Scores
are bench_als_robustness.py's: what ``pcseg segment`` writes at ``--votes`` (the network, then the card's
per-point tests), ground / vegetation / building IoU pooled over the source's fully labelled held-out files and
their mean over the classes present; ground / non-ground IoU over all of them (ground-only files too).

The schedule is the preset's, compressed to ``--steps``: 8 epochs of steps/8, the learning rate divided by 10
after 4 (the preset runs 12 epochs of 250 steps, divided after 6). No validation during training; the last
checkpoint is scored. A finished run (``done.json``) is not trained again; an interrupted one resumes
(``pcseg train --resume``), so the benchmark can run across sessions.

    python benchmarks/bench_als_loso.py [--steps 1000] [--threads 2] [--run-root runs/loso]
        [--only SOURCE ...] [--votes 1] [--with-test] [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
_spec = importlib.util.spec_from_file_location("bench_als_robustness", HERE / "bench_als_robustness.py")
rob = importlib.util.module_from_spec(_spec)
sys.modules["bench_als_robustness"] = rob   # its dataclasses look their module up
_spec.loader.exec_module(rob)

from pcseg.engine.quality import parse_eval_spec  # noqa: E402
from pcseg.engine.segment import airborne_rules  # noqa: E402
from pcseg.models import zoo  # noqa: E402

SOURCES = ("ign-dense", "ign-sparse", "ahn3", "samples", "forest")
RECIPE_MODEL = "sala-als-terrain"


def file_of(item: str) -> Path:
    """The file of a ``-d`` item (``MAP:PATH`` or a path; ``pcseg.engine.quality.parse_eval_spec``)."""
    return Path(parse_eval_spec(item)[0])


def source_of(item: str) -> str:
    """The source of a data file (a path, or a ``-d`` item with its class-map prefix)."""
    p = file_of(item)
    name = p.name
    if p.parent.name == "als_ground":
        return "forest"
    if name.startswith("ahn3"):
        return "ahn3"
    if name.startswith(("test_semis", "Semis")):
        return "ign-sparse"
    if name.startswith(("test_data", "ign_")):
        return "ign-dense"
    return "samples"


def recipe(card: dict) -> tuple[str, list[str], list[str]]:
    """(preset, training ``-d`` items, other key=value settings) of a card's training command (its paths are
    relative to the repository, where the runs start); ``--val`` items and ``checkpoint_every`` are dropped (no
    validation, the bench sets its own)."""
    words = shlex.split(card["training"]["command"])
    preset, data, settings = None, [], []
    i = 2
    while i < len(words):
        w = words[i]
        if w in ("--config", "-c"):
            preset, i = words[i + 1], i + 2
        elif w in ("-d", "--data"):
            data.append(words[i + 1])
            i += 2
        elif w == "--val":
            i += 2
        elif w.startswith("--"):
            raise SystemExit(f"unexpected option {w} in the recipe's command")
        else:
            if not w.startswith("checkpoint_every="):
                settings.append(w)
            i += 1
    if preset is None:
        raise SystemExit("the recipe's command names no --config preset")
    return preset, data, settings


def train(run: Path, preset: str, data: list[str], settings: list[str], steps: int, threads: int, seed: int) -> dict:
    """Train (or resume, or reuse) one run; returns its done.json record."""
    done = run / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    epoch = max(1, steps // 8)
    cmd = [sys.executable, "-m", "pcseg.cli.main", "train", "--run-dir", str(run), "--threads", str(threads), "--quiet"]
    resume = (run / "last.state.safetensors").is_file()
    if resume:   # the run's own config (a --config would replace it, data and all)
        cmd.append("--resume")
    else:
        cmd += ["--config", preset, "--seed", str(seed)]
        for d in data:
            cmd += ["-d", d]
        cmd += settings + [f"epochs={8 if steps >= 8 else steps}", f"steps_per_epoch={epoch if steps >= 8 else 1}",
                           f"lr_decay_epochs={4 if steps >= 8 else max(1, steps // 2)}",
                           f"checkpoint_every={max(1, epoch)}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=HERE.parent)
    if r.returncode != 0 or not (run / "last.safetensors").is_file():
        raise SystemExit(f"training {run.name} failed (exit {r.returncode})")
    record = {"run": run.name, "files": len(data), "steps": steps, "seconds_this_call": round(time.perf_counter() - t0, 1),
              "resumed": resume}
    done.write_text(json.dumps(record))
    return record


def score(checkpoint: Path, files, votes: int) -> dict:
    ck = zoo.load(str(checkpoint), "cpu")
    model = rob.Model(ck, airborne_rules(ck), votes)
    tally = rob.Tally()
    for path, map_name, full in files:
        s = rob.load(path, map_name, full, None)
        tally = tally + s.tally(model(s.cloud))
    return tally.summary()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--votes", type=int, default=1)
    ap.add_argument("--run-root", default="runs/loso")
    ap.add_argument("--only", nargs="+", choices=SOURCES, help="the sources to leave out (default: all five)")
    ap.add_argument("--with-test", action="store_true",
                    help="also score the test files (a final report; recipes are chosen on validation files only)")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    card = zoo.shipped()[RECIPE_MODEL]
    preset, data, settings = recipe(card)
    held = rob.file_set(["val"]) + (rob.file_set(["test"]) if args.with_test else [])
    trained = {file_of(d).name for d in data}
    if trained & {p.name for p, _, _ in held}:
        raise SystemExit("a held-out file is in the recipe's training data")
    root = Path(args.run_root)
    root.mkdir(parents=True, exist_ok=True)
    plan = {"recipe": RECIPE_MODEL, "preset": preset, "settings": settings, "steps": args.steps, "seed": args.seed,
            "data": data}
    plan_file = root / "plan.json"
    if plan_file.is_file() and json.loads(plan_file.read_text()) != plan:
        raise SystemExit(f"{plan_file} holds another plan: use another --run-root")
    plan_file.write_text(json.dumps(plan, indent=1))
    t0, load0 = time.perf_counter(), os.getloadavg()
    runs = {"all": train(root / "all", preset, data, settings, args.steps, args.threads, args.seed)}
    rows = []
    for source in args.only or SOURCES:
        kept = [d for d in data if source_of(d) != source]
        runs[source] = train(root / f"without-{source}", preset, kept, settings, args.steps, args.threads, args.seed)
        files = [(p, m, f) for p, m, f in held if source_of(str(p)) == source]
        rows.append({"source": source, "held_out_files": [p.name for p, _, _ in files],
                     "training_files_left_out": len(data) - len(kept),
                     "in_source": score(root / "all" / "last.safetensors", files, args.votes),
                     "left_out": score(root / f"without-{source}" / "last.safetensors", files, args.votes)})
    pct = lambda v: "  -  " if v is None else f"{100 * v:5.1f}"
    print(f"## leave one source out: {RECIPE_MODEL}'s recipe, {args.steps} steps, votes {args.votes}, "
          f"{torch.get_num_threads()} threads, {rob.cpu_model()}, load {load0[0]:.2f}\n")
    print("| source | held-out files | training files left out | in-source g / v / b (mean) | left out g / v / b "
          "(mean) | Δ mean | ground/non-ground IoU in / out |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        a, b = r["in_source"], r["left_out"]
        delta = None if a["mean"] is None or b["mean"] is None else b["mean"] - a["mean"]
        r["delta_mean"] = delta
        print(f"| {r['source']} | {', '.join(r['held_out_files'])} | {r['training_files_left_out']} | "
              + " / ".join(pct(a["iou"][k]) for k in rob.CLASSES) + f" ({pct(a['mean'])}) | "
              + " / ".join(pct(b["iou"][k]) for k in rob.CLASSES) + f" ({pct(b['mean'])}) | "
              f"{'  -  ' if delta is None else f'{100 * delta:+5.1f}'} | {pct(a['ground_iou'])} / {pct(b['ground_iou'])} |")
    report = {**plan, "runs": runs, "rows": rows, "cpu": rob.cpu_model(), "threads": torch.get_num_threads(),
              "load_average_start": load0, "load_average_end": os.getloadavg(),
              "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
