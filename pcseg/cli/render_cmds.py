"""`pcseg render`: a PNG picture of a cloud (classes, confidence or any field; top, side or perspective view) or
of truth | prediction | errors. Nothing heavy is imported at module import: the CLI starts fast."""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

import typer

from ..errors import BadInputError, UsageError
from .common import FORMAT_HELP, check_not_input, in_format, json_option, quiet_option

VIEWS = ("top", "side", "persp")


def _size(text: Optional[str], default: tuple[int, int]) -> tuple[int, int]:
    if text is None:
        return default
    parts = text.lower().replace("*", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--size is WIDTHxHEIGHT in pixels (e.g. 1200x900), not {text!r}") from None
    return w, h


def _class_map(model: Optional[str], class_map: Optional[str]):
    """The class map named by --model (its card; the weights are not loaded) or --class-map, or None."""
    if model is not None and class_map is not None:
        raise UsageError("give --model or --class-map, not both")
    if class_map is not None:
        from ..data.classmaps import load_class_map

        return load_class_map(class_map)
    if model is None:
        return None
    from ..data.classmaps import ClassMap
    from ..models.zoo import resolve

    _, card, _ = resolve(model)
    classes = card.get("classes")
    if not classes or "names" not in classes:
        raise UsageError(f"model {model!r} has no class list in its card")
    return ClassMap.from_dict(classes)


def register(app: typer.Typer) -> None:
    @app.command()
    def render(
        src: str = typer.Argument(..., help="a cloud pcseg reads (las, laz, ply, bin, npy, txt, pcd, S3DIS room), "
                                            "or - for stdin"),
        output: str = typer.Option(..., "-o", "--output", help="PNG file to write (- for stdout)"),
        by: str = typer.Option("auto", "--by",
                               help="colours: class, classification, confidence, rgb, z or any field name (auto: "
                                    "the prediction pcseg wrote, else classification, else rgb, else z)"),
        view: str = typer.Option("top", "--view", help="top (highest point per pixel), side (from the south) or "
                                                       "persp (from the south-west, above)"),
        compare: Optional[str] = typer.Option(
            None, "--compare", metavar="TRUTH_FIELD",
            help="three panels: TRUTH_FIELD | prediction | errors (wrong where they differ)"),
        pred: Optional[str] = typer.Option(
            None, "--pred", metavar="FIELD",
            help="prediction field of --compare (default: pred_class, else class, else classification)"),
        model: Optional[str] = typer.Option(
            None, "--model", "-m", help="class names and colours of `class` fields from this model's card "
                                        "(shipped name or checkpoint)"),
        class_map: Optional[str] = typer.Option(
            None, "--class-map", help="class names and colours of `class` fields from a class map (built-in name "
                                      "such as als, asprs, s3dis, or a JSON file)"),
        size: Optional[str] = typer.Option(None, "--size", metavar="WxH",
                                           help="picture size in pixels (default 1200x900; 1800x700 with --compare)"),
        point_size: Optional[int] = typer.Option(None, "--point-size", min=0, max=20,
                                                 help="splat radius in pixels (0: one pixel; default: from the "
                                                      "point density)"),
        no_legend: bool = typer.Option(False, "--no-legend",
                                       help="the map only: no legend, titles, scale bar or north arrow"),
        format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
        force: bool = typer.Option(False, "--force", help="allow writing over the input file"),
        json_out: bool = json_option(),
        quiet: bool = quiet_option(),
    ):
        """Draw a cloud as a PNG: classes with the model's or ASPRS colours, confidence or any field on a colour
        ramp; --compare draws truth | prediction | errors. Top views have a legend, scale bar and north arrow."""
        from ..engine import render as R

        R.require_pillow()  # before reading anything: a one-line error with the install command
        if view not in VIEWS:
            raise UsageError(f"--view is one of {', '.join(VIEWS)}, not {view!r}")
        if compare is None and pred is not None:
            raise UsageError("--pred names the prediction of --compare; add --compare TRUTH_FIELD")
        if compare is not None and by != "auto":
            raise UsageError("--compare colours truth and prediction by class; drop --by")
        dims = _size(size, R.COMPARE_SIZE if compare else R.DEFAULT_SIZE)
        if output == "-" and json_out:
            raise UsageError("--json and -o - both use stdout; write the picture to a file or drop --json")
        quiet = quiet or json_out
        if output != "-":
            if not output.lower().endswith(".png"):
                raise UsageError(f"the picture is a PNG: name the output <name>.png, not {output!r}")
            check_not_input([src], output, force)
            folder = os.path.dirname(os.path.abspath(output))
            if not os.path.isdir(folder):
                raise UsageError(f"the folder of {output} does not exist")
        cmap = _class_map(model, class_map)

        from ..io import read
        from .ui import note

        cloud = read(src, in_format(src, format, None))
        if len(cloud) == 0:
            raise BadInputError("the cloud has no points to draw", src)
        if cmap is None and (implied := R.implied_class_map(cloud)) is not None:
            shown = R.default_prediction_field(cloud) if by == "auto" else by
            needs_names = compare is not None or shown in ("class", "pred_class")
            if needs_names:
                note(f"class names and colours of the {implied.name!r} class map (the file has "
                     "height_above_ground, which pcseg segment writes for models of that class set); "
                     "--model names another", quiet)
        if compare is not None:
            image = R.render_compare(cloud, compare, pred, view, class_map=cmap, size=dims, point_size=point_size,
                                     annotate=not no_legend)
        else:
            image = R.render_cloud(cloud, by, view, class_map=cmap, size=dims, point_size=point_size,
                                   annotate=not no_legend)
        if output == "-":
            sys.stdout.buffer.write(R.png_bytes(image))
            sys.stdout.flush()
        else:
            R.save_png(image, output)
            note(f"wrote {output} ({image.shape[1]}x{image.shape[0]})", quiet)
        if json_out:
            typer.echo(json.dumps({"input": src, "output": output, "points": len(cloud), "view": view,
                                   "width": int(image.shape[1]), "height": int(image.shape[0])}))
