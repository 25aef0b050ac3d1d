"""`pcseg export`: a segmentation network as a .pt2 (torch.export) or .onnx file, with its card."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .common import check_not_input, json_option, quiet_option
from .ui import note

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ign_lidarhd_77060_627760.laz"


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        model: str = typer.Argument(..., help="shipped model name or checkpoint file"),
        output: Path = typer.Option(..., "-o", "--output", help="model.pt2 (torch.export) or model.onnx"),
        input: Optional[Path] = typer.Option(None, "--input", "-i", help="a real cloud the network is traced on "
                                             "and checked against (default: the shipped example tile)"),
        check: bool = typer.Option(True, "--check/--no-check", help="run the exported network (an .onnx with ONNX "
                                   "Runtime, when installed) and the original on --input; report the largest logit "
                                   "difference"),
        json_out: bool = json_option(),
        quiet: bool = quiet_option(),
    ):
        """Write the network of a segmentation model for deployment (pre- and post-processing stay pcseg's):
        `pcseg segment --model model.pt2` runs it through the same pipeline."""
        from ..engine.export import compare, compare_onnx, export_model
        from ..io import read
        from ..models import zoo

        source = input or EXAMPLE
        if not source.exists():
            raise UsageError("pass --input: a real cloud of the kind the model segments (to trace the network on)")
        check_not_input([model, str(source)], str(output), force=False)
        ck = zoo.load(model)
        cloud = read(str(source))
        note(f"tracing {ck.name} on {source.name} ...", quiet or json_out)
        export_model(ck, cloud, output)
        result = {"model": ck.name, "output": str(output), "bytes": output.stat().st_size}
        if check and output.suffix.lower() == ".pt2":
            result["check"] = {"input": source.name, **compare(ck, zoo.load(str(output)), cloud)}
        elif check:
            import importlib.util

            if importlib.util.find_spec("onnxruntime") is None:
                note("ONNX Runtime is not installed: the .onnx file is written but not checked "
                     "(pip install 'pcseg[onnx]')", quiet or json_out)
            else:
                result["check"] = {"input": source.name, "runtime": "onnxruntime", **compare_onnx(ck, output, cloud)}
        if json_out:
            typer.echo(json.dumps(result))
        else:
            msg = f"{output} ({result['bytes'] / 1e6:.1f} MB)"
            if "check" in result:
                c = result["check"]
                msg += (f"; on {c['input']}: max |logit difference| {c['max_abs_logit_diff']:.2e}, "
                        f"{100 * c['labels_identical']:.2f}% identical labels")
            note(msg, quiet)
