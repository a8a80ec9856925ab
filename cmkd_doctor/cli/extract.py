"""``cmkd-doctor extract``: middle-layer features of a backbone, for ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmkd_doctor.choices import POOLS
from cmkd_doctor.cli import render
from cmkd_doctor.cli.render import line
from cmkd_doctor.errors import InputError


def extract_command(
    layer: Annotated[str | None, typer.Option(
        help="The node (torchvision) or tensor name (ONNX) whose output is the feature, "
             "e.g. layer3 for a ResNet; --list-layers lists them.",
        show_default=False)] = None,
    out_file: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Features to write (.npy); a .json beside it lists the input "
                            "of each row.", show_default=False)] = None,
    list_layers: Annotated[bool, typer.Option(
        "--list-layers", help="With --model (or --onnx, --backbone): print the layers it "
                              "offers to --layer, with their output shapes, and stop.")
    ] = False,
    input_shape: Annotated[str | None, typer.Option(
        help="With --list-layers and an architecture name: the shape of one input "
             "[default: 3,224,224].", show_default=False)] = None,
    backbone: Annotated[str | None, typer.Option(
        help="A torchvision architecture, e.g. resnet18.")] = None,
    weights: Annotated[Path | None, typer.Option(
        help="Its weights as .safetensors (a state dict); never downloaded.")] = None,
    onnx: Annotated[Path | None, typer.Option(
        help="Instead of --backbone: a user's ONNX model.")] = None,
    model: Annotated[str | None, typer.Option(
        help="Instead of --backbone or --onnx: an .onnx model, a torch.export program "
             "(.pt2; --layer a node name or module path) or an architecture name (with "
             "--weights), as derive-teacher --model takes it.")] = None,
    images: Annotated[Path | None, typer.Option(
        help="A folder of images (.jpg, .png), read with torchvision.io, RGB, resized and "
             "ImageNet-normalised.")] = None,
    array: Annotated[str | None, typer.Option(
        help="Instead of --images: an array (n, ...) of model inputs (.npy, .npz[:key], "
             ".safetensors).")] = None,
    size: Annotated[int, typer.Option(help="Images are resized to size x size.")] = 224,
    batch_size: Annotated[int, typer.Option(help="Inputs per forward pass.")] = 64,
    pool: Annotated[str, typer.Option(help=POOLS.describe() + ".")] = "avg",
    device: Annotated[str, typer.Option(
        help="auto, cpu, cuda or cuda:N (torchvision backbones).")] = "auto",
) -> None:
    """Run a backbone up to a named layer and save the features (paper App. B.4 note 2).

    The result ranks like any feature array: cmkd-doctor rank OUT.npy OTHER.npy LABELS.
    --list-layers shows the names --layer takes.
    """
    if input_shape is not None and not list_layers:
        raise InputError(f"--input-shape {input_shape} goes with --list-layers (an "
                         "architecture's layers are listed on an input of that shape); "
                         "extract reads the shape of its inputs")
    if list_layers:
        from cmkd_doctor.teachers.extraction import list_layers as layers_of
        from cmkd_doctor.teachers.whole_networks import parse_shape

        named = [m for m in (model, None if onnx is None else str(onnx), backbone) if m]
        if len(named) != 1:
            raise InputError("--list-layers lists the layers of one model: give --model "
                             "(or --onnx, or --backbone)")
        found = layers_of(named[0], weights, parse_shape(input_shape, "--input-shape"))
        render.layers(found, named[0])
        return
    if layer is None or out_file is None:
        raise InputError("extract needs --layer NAME and --out FILE.npy (or --list-layers "
                         "to see the layers a model offers)")
    from cmkd_doctor.teachers.extraction import ExtractOptions, extract_to  # torch: to run
    given = {"layer": layer, "weights": None if weights is None else str(weights),
             "size": size, "batch_size": batch_size, "pool": pool,
             "device": device}
    if model is not None:
        if backbone is not None or onnx is not None:
            raise InputError("--model replaces --backbone and --onnx; give one of them")
        options = ExtractOptions.of_model(model, **given)
    else:
        options = ExtractOptions(**given, backbone=backbone,
                                 onnx=None if onnx is None else str(onnx))
    features, path = extract_to(out_file, options, images=images, array=array)
    line(f"wrote {path}: {features.shape[0]} rows x {features.shape[1]} features from "
         f"{options.backbone or options.onnx or options.program} at {layer}")
