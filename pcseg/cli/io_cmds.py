"""Commands that need no neural network: info, convert, subsample, tile. They must not import torch."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ..errors import UsageError
from .common import FORMAT_HELP, check_not_input, in_format, json_option, out_format, quiet_option
from .ui import err, note, progress

LABEL_FIELDS = ("classification", "class", "label", "labels", "semantic")


def describe_cloud(path: str, cloud) -> dict:
    """The facts `pcseg info` shows, as a JSON-serialisable dict."""
    lo, hi = cloud.xyz.min(axis=0), cloud.xyz.max(axis=0)
    info = {
        "path": path,
        "format": cloud.format,
        "points": len(cloud),
        "bounds": {"min": lo.tolist(), "max": hi.tolist()},
        "fields": {name: str(values.dtype) for name, values in cloud.fields.items()},
        "crs": None,
        "classes": {},
    }
    header = cloud.meta.get("las_header")
    if header is not None:
        from ..io.las import las_crs, las_version

        info["crs"] = las_crs(header)
        info["las"] = {
            "version": las_version(header),
            "point_format": int(header.point_format.id),
            "scales": np.asarray(header.scales).tolist(),
            "offsets": np.asarray(header.offsets).tolist(),
            "vlrs": len(header.vlrs),
            "evlrs": len(header.evlrs or []),
            "extra_dimensions": [d.name for d in header.point_format.extra_dimensions],
        }
    if cloud.format == "ply":
        info["ply"] = {"encoding": "ascii" if cloud.meta["ply_text"] else
                       {"<": "binary_little_endian", ">": "binary_big_endian"}.get(cloud.meta["ply_byte_order"], "binary"),
                       "comments": cloud.meta["ply_comments"]}
    if cloud.meta.get("pcd_dropped"):
        info["dropped_invalid_points"] = cloud.meta["pcd_dropped"]
    for name in LABEL_FIELDS:
        if name in cloud.fields and cloud.fields[name].dtype.kind in "iu":
            values, counts = np.unique(cloud.fields[name], return_counts=True)
            info["classes"] = {"field": name, "counts": {str(int(v)): int(c) for v, c in zip(values, counts)}}
            names = cloud.meta.get("class_names")
            if names:
                info["classes"]["names"] = {str(i): n for i, n in enumerate(names)}
            elif header is not None and name == "classification":
                from ..io.las import ASPRS_CLASS_NAMES

                info["classes"]["names"] = {str(int(v)): ASPRS_CLASS_NAMES[int(v)] for v in values
                                            if int(v) in ASPRS_CLASS_NAMES}
            break
    return info


def _print_info(info: dict) -> None:
    from rich.table import Table

    out = err.__class__()  # stdout console
    out.print(f"[bold]{info['path']}[/bold]  {info['format']}  {info['points']:,} points")
    lo, hi = info["bounds"]["min"], info["bounds"]["max"]
    out.print("  bounds  " + "  ".join(f"{a}: {l:.3f} .. {h:.3f}" for a, l, h in zip("xyz", lo, hi)))
    if info.get("crs"):
        out.print(f"  CRS     {info['crs']}")
    if "las" in info:
        las = info["las"]
        out.print(f"  LAS {las['version']} point format {las['point_format']}, scales {las['scales']}, "
                  f"offsets {las['offsets']}, {las['vlrs']} VLRs, {las['evlrs']} EVLRs")
    if "ply" in info:
        out.print(f"  PLY {info['ply']['encoding']}")
    out.print("  fields  " + ", ".join(f"{n} ({t})" for n, t in info["fields"].items()))
    if info["classes"]:
        table = Table(title=f"{info['classes']['field']} histogram", show_edge=False)
        table.add_column("value", justify="right")
        table.add_column("name")
        table.add_column("points", justify="right")
        table.add_column("%", justify="right")
        names = info["classes"].get("names", {})
        for value, count in info["classes"]["counts"].items():
            table.add_row(value, names.get(value, ""), f"{count:,}", f"{100 * count / info['points']:.1f}")
        out.print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def info(
        files: list[str] = typer.Argument(..., help="point cloud files (or - for stdin)"),
        format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
        columns: Optional[str] = typer.Option(None, "--columns", help="column spec for .bin/.npy/text, e.g. x,y,z,intensity,class"),
        json_out: bool = json_option(),
    ):
        """Points, bounds, fields and dtypes, CRS and class histogram of point cloud files."""
        from ..io import read

        for path in files:
            cloud = read(path, in_format(path, format, None), columns=columns)
            desc = describe_cloud(path, cloud)
            if json_out:
                typer.echo(json.dumps(desc))
            else:
                _print_info(desc)

    @app.command()
    def convert(
        src: str = typer.Argument(..., help="input cloud (or - for stdin)"),
        output: str = typer.Option(..., "-o", "--output", help="output file (or - for stdout)"),
        format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
        in_fmt: Optional[str] = typer.Option(None, "--in-format", help="force the input format"),
        out_fmt: Optional[str] = typer.Option(None, "--out-format", help="force the output format"),
        columns: Optional[str] = typer.Option(None, "--columns", help="column spec for .bin/.npy/text input"),
        force: bool = typer.Option(False, "--force", help="allow writing over the input file"),
        json_out: bool = json_option(),
        quiet: bool = quiet_option(),
    ):
        """Convert between formats, losslessly where the formats allow (says which fields a format cannot hold)."""
        from ..io import read, write

        if output == "-" and json_out:
            raise UsageError("--json and -o - both use stdout; write the cloud to a file or drop --json")
        t0 = time.perf_counter()
        check_not_input([src], output, force)
        with progress(f"converting {Path(src).name}", None, quiet or json_out or output == "-"):
            cloud = read(src, in_format(src, format, in_fmt), columns=columns)
            notes = write(cloud, output, out_format(output, format, out_fmt))
        for n in notes:
            note(n, quiet or json_out)
        if json_out:
            typer.echo(json.dumps({"input": src, "output": output, "points": len(cloud), "fields": list(cloud.fields),
                                   "notes": notes, "seconds": round(time.perf_counter() - t0, 3)}))

    @app.command()
    def subsample(
        src: str = typer.Argument(..., help="input cloud (or - for stdin)"),
        output: str = typer.Option(..., "-o", "--output", help="output file (or - for stdout)"),
        cell: float = typer.Option(..., "--cell", help="grid cell size in the cloud's units (e.g. 0.04 m)"),
        format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
        in_fmt: Optional[str] = typer.Option(None, "--in-format"),
        out_fmt: Optional[str] = typer.Option(None, "--out-format"),
        columns: Optional[str] = typer.Option(None, "--columns"),
        force: bool = typer.Option(False, "--force", help="allow writing over the input file"),
        json_out: bool = json_option(),
        quiet: bool = quiet_option(),
    ):
        """Grid subsampling (KPConv §3.3): one point per cell at the barycentre, fields averaged, labels by majority."""
        from ..geometry import subsample_cloud
        from ..io import read, write

        if cell <= 0:
            raise UsageError(f"--cell must be positive, got {cell}")
        if output == "-" and json_out:
            raise UsageError("--json and -o - both use stdout; write the cloud to a file or drop --json")
        t0 = time.perf_counter()
        check_not_input([src], output, force)
        cloud = read(src, in_format(src, format, in_fmt), columns=columns)
        sub, _ = subsample_cloud(cloud, cell)
        notes = write(sub, output, out_format(output, format, out_fmt))
        for n in notes:
            note(n, quiet or json_out)
        note(f"{len(cloud):,} -> {len(sub):,} points (cell {cell})", quiet or json_out)
        if json_out:
            typer.echo(json.dumps({"input": src, "output": output, "points": len(cloud), "subsampled_points": len(sub),
                                   "cell": cell, "notes": notes, "seconds": round(time.perf_counter() - t0, 3)}))

    @app.command()
    def tile(
        src: str = typer.Argument(..., help="input cloud (or - for stdin)"),
        out_dir: Path = typer.Option(..., "-o", "--output", help="output folder (created)"),
        radius: float = typer.Option(2.0, "--radius", help="sphere radius"),
        coverage: float = typer.Option(0.7, "--coverage", help="every point lies within coverage*radius of a centre"),
        format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
        out_fmt: Optional[str] = typer.Option(None, "--out-format", help="format of the sphere files (default: the input's)"),
        columns: Optional[str] = typer.Option(None, "--columns"),
        json_out: bool = json_option(),
        quiet: bool = quiet_option(),
    ):
        """Cover a cloud with overlapping spheres and write each as a file, plus index.json."""
        from ..geometry import covering_centers, points_in_spheres
        from ..io import read, write
        from ..io.atomic import atomic_write

        if radius <= 0 or not 0 < coverage <= 1:
            raise UsageError("--radius must be positive and --coverage in (0, 1]")
        cloud = read(src, in_format(src, format, None), columns=columns)
        fmt = out_fmt or (cloud.format if cloud.format not in (None, "s3dis") else "ply")
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"{out_dir} exists and is not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        centers = covering_centers(cloud.xyz, radius, coverage)
        members = points_in_spheres(cloud.xyz, centers, radius)
        stem = "stdin" if src == "-" else Path(src).stem
        ext = {"bin": "bin", "txt": "txt"}.get(fmt, fmt)
        index = {"source": src, "radius": radius, "coverage": coverage, "points": len(cloud), "spheres": []}
        width = max(4, len(str(len(centers))))
        quiet = quiet or json_out
        with progress("writing spheres", len(centers), quiet) as advance:
            for i, (c, idx) in enumerate(zip(centers, members)):
                name = f"{stem}_sphere_{i:0{width}d}.{ext}"
                write(cloud.select(idx), str(out_dir / name), fmt)
                index["spheres"].append({"file": name, "center": c.tolist(), "points": int(len(idx))})
                advance()
        atomic_write(out_dir / "index.json", lambda f: f.write(json.dumps(index, indent=1).encode()))
        note(f"{len(centers)} spheres of radius {radius} written to {out_dir}", quiet)
        if json_out:
            typer.echo(json.dumps({"input": src, "output": str(out_dir), "points": len(cloud),
                                   "spheres": len(centers), "radius": radius}))
