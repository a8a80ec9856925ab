"""``cmkd-doctor extract``: middle-layer features of a backbone, for ranking."""

from __future__ import annotations

from pathlib import Path

import typer

from cmkd_doctor.cli._common import out
from cmkd_doctor.errors import InputError
from cmkd_doctor.extract import POOLS, ExtractOptions, extract, write_features
from cmkd_doctor.outputs import check_out_dir
from cmkd_doctor.runtime import resolve_device


def extract_command(
    layer: str = typer.Option(..., help="The node (torchvision) or tensor name (ONNX) whose "
                              "output is the feature, e.g. layer3 for a ResNet."),
    backbone: str = typer.Option(None, help="A torchvision architecture, e.g. resnet18."),
    weights: Path = typer.Option(None, help="Its weights as .safetensors (a state dict); "
                                 "never downloaded."),
    onnx: Path = typer.Option(None, help="Instead of --backbone: a user's ONNX model."),
    images: Path = typer.Option(None, help="A folder of images (.jpg, .png), read with "
                                "torchvision.io, RGB, resized and ImageNet-normalised."),
    array: str = typer.Option(None, help="Instead of --images: an array (n, ...) of model "
                              "inputs (.npy, .npz[:key], .safetensors)."),
    size: int = typer.Option(224, help="Images are resized to size x size."),
    batch_size: int = typer.Option(64, help="Inputs per forward pass."),
    pool: str = typer.Option("avg", help="avg: one value per channel (spatial mean); "
                             "flatten: every position."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N (torchvision "
                               "backbones)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Features to write (.npy); a "
                                  ".json beside it lists the input of each row."),
) -> None:
    """Run a backbone up to a named layer and save the features (paper App. B.4 note 2).

    The result ranks like any feature array: cmkd-doctor rank OUT.npy OTHER.npy LABELS.
    """
    if out_file.suffix.lower() != ".npy":
        raise InputError(f"--out {out_file}: features are written as .npy")
    check_out_dir(out_file.parent)
    if pool not in POOLS:
        raise InputError(f"--pool must be one of {', '.join(POOLS)}; got {pool!r}")
    options = ExtractOptions(layer=layer, backbone=backbone,
                             weights=None if weights is None else str(weights),
                             onnx=None if onnx is None else str(onnx), size=size,
                             batch_size=batch_size, pool=pool,
                             device=str(resolve_device(device)))
    features, names = extract(options, images=images, array=array)
    write_features(features, names, out_file, options)
    out.print(f"wrote {out_file}: {features.shape[0]} rows x {features.shape[1]} features "
              f"from {options.backbone or options.onnx} at {layer}", markup=False)
