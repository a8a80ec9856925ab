"""Whole teacher networks masked where the ranking was taken (paper App. B.4: channels of a
middle layer nullified "during the distillation process").

A derived teacher at the feature level is a mask in front of a head
(:class:`~cmkd_doctor.teachers.Teacher`). A user's teacher is a network from raw input to
logits; :func:`mask_onnx_layer` puts the same mask inside it, right after the layer whose
features ``extract`` took and ``rank`` ranked: every nullified channel of that tensor is
replaced by its fill value (spatial maps broadcast the per-channel value over their
positions), so a channel-pooled feature of the masked map is the fill, as at the feature
level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cmkd_doctor.errors import InputError, option_error

# the suffix of the layer's own output once the mask takes its name
RAW_SUFFIX = "__cmkd_unmasked"


def mask_onnx_layer(model: Any, layer: str, keep: np.ndarray, fill: np.ndarray,
                    channel_axis: int = 1) -> Any:
    """A copy of the ONNX ``model`` whose tensor ``layer`` is masked: channel c along
    ``channel_axis`` kept where ``keep[c]``, else replaced by ``fill[c]``.

    The node that produced ``layer`` now writes ``layer + RAW_SUFFIX``; a ``Mul`` by the
    keep mask and an ``Add`` of ``(1 - keep) * fill``, inserted right after it, produce
    ``layer``, so every consumer (and ``extract --layer`` on the masked model) reads the
    masked tensor. With every channel kept the model computes what it did.
    """
    import onnx
    from onnx import helper, numpy_helper

    keep = np.asarray(keep, dtype=bool)
    fill = np.asarray(fill, dtype=np.float32)
    if keep.ndim != 1 or fill.shape != keep.shape:
        raise InputError(f"the mask and fill values must be one per channel; got "
                         f"{keep.shape} and {fill.shape}")
    if channel_axis < 1:
        raise option_error("channel-axis", "1 or more (axis 0 is the batch)", channel_axis)
    found = onnx.ModelProto()
    found.CopyFrom(model)
    graph = found.graph
    producers = [node for node in graph.node if layer in node.output]
    if not producers:
        names = sorted({o for node in graph.node for o in node.output})
        listed = [n for n in names if layer in n][:6] or names[-6:]
        raise option_error("layer", f"a tensor some node of the model produces, such as "
                           f"{', '.join(listed)}", layer)
    rank = _rank_of(found, layer)
    if rank is not None and channel_axis >= rank:
        raise option_error("channel-axis", f"an axis of {layer}, which has {rank}",
                           channel_axis)
    width = _width_of(found, layer, channel_axis)
    if width is not None and width != len(keep):
        raise InputError(f"--layer {layer}: {width} channels on axis {channel_axis}, but the "
                         f"ranking has {len(keep)}; rank the features of this layer")
    shape = [1] * (channel_axis + 1 if rank is None else rank)
    shape[channel_axis] = len(keep)
    raw = layer + RAW_SUFFIX
    producer = producers[0]
    producer.output[list(producer.output).index(layer)] = raw
    scale = numpy_helper.from_array(keep.astype(np.float32).reshape(shape),
                                    layer + "__cmkd_keep")
    offset = numpy_helper.from_array(((~keep) * fill).astype(np.float32).reshape(shape),
                                     layer + "__cmkd_fill")
    graph.initializer.extend([scale, offset])
    kept = layer + "__cmkd_kept"
    nodes = [helper.make_node("Mul", [raw, scale.name], [kept], name=layer + "__cmkd_mul"),
             helper.make_node("Add", [kept, offset.name], [layer], name=layer + "__cmkd_add")]
    position = list(graph.node).index(producer) + 1
    for offset_index, node in enumerate(nodes):
        graph.node.insert(position + offset_index, node)
    onnx.checker.check_model(found)
    return found


def _value_info(model: Any, name: str) -> Any | None:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is a help, not a requirement
        inferred = model
    graph = inferred.graph
    return next((v for v in (*graph.value_info, *graph.output) if v.name == name), None)


def _rank_of(model: Any, name: str) -> int | None:
    info = _value_info(model, name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    return len(info.type.tensor_type.shape.dim)


def _width_of(model: Any, name: str, axis: int) -> int | None:
    info = _value_info(model, name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    dims = info.type.tensor_type.shape.dim
    if axis >= len(dims) or not dims[axis].HasField("dim_value"):
        return None
    return int(dims[axis].dim_value)


def derive_onnx_network(run_dir: str | Path, model: str | Path | None, layer: str | None,
                        spec: Any, out: str | Path | None, channel_axis: int = 1
                        ) -> dict[str, Any]:
    """``derive-teacher --model MODEL.onnx --layer NAME``: the user's whole teacher with the
    mask of ``spec`` (mode, ratio, fill, seed) inside it, after tensor ``layer``, written
    to ``out`` as ONNX; returns what was done (the ``teacher`` document's fields).

    The ranking of ``run_dir`` must be of the features ``extract`` took at ``layer``
    (pooled to one value per channel): its channel count is the layer's. The fill values
    are those features' means on the run's training rows, as for the feature-level
    teachers, so a pooled feature of a nullified channel is its fill.
    """
    import onnx
    import torch

    from cmkd_doctor.derive import derived_mask
    from cmkd_doctor.files import regular_file
    from cmkd_doctor.outputs import check_out_file, write_bytes
    from cmkd_doctor.rundir import RunDir

    if model is None or layer is None or out is None:
        raise InputError("--model, --layer and --export-onnx go together: the network, the "
                         "tensor that was ranked, and where to write the masked network")
    spec = spec.checked()
    if spec.source != "trained" or spec.refit:
        raise InputError("--model masks the given network: --from, --teacher and --refit "
                         "are for feature-level teachers")
    out = check_out_file(out, "--export-onnx")
    path = regular_file(model, f"--model {model}")
    try:
        network = onnx.load(path)
    except Exception as exc:  # onnx raises its own untyped decode errors
        raise InputError(f"--model {model}: cannot be read as ONNX ({exc})") from exc
    run = RunDir(run_dir).load()
    d = len(run.salience)
    rows = run.rows(run.teacher_side, torch.device("cpu"))
    nullified, keep, fill = derived_mask(run, spec, rows)
    fill = fill.cpu().numpy().astype(np.float32)
    masked = mask_onnx_layer(network, layer, keep, fill, channel_axis)
    onnx.helper.set_model_props(masked, {
        "cmkd_doctor.mode": spec.mode, "cmkd_doctor.ratio": f"{spec.ratio:g}",
        "cmkd_doctor.layer": layer, "cmkd_doctor.run_id": run.run_id})
    written = write_bytes(out, masked.SerializeToString())
    return {"name": spec.name, "mode": spec.mode, "ratio": spec.ratio, "seed": spec.seed,
            "fill": spec.fill, "model": str(Path(model).absolute()), "layer": layer,
            "channel_axis": channel_axis, "modality": run.teacher_side, "n_channels": d,
            "nullified": nullified.tolist(), "mask": keep.astype(int).tolist(),
            "fill_values": fill.tolist(), "rank": {"run_id": run.run_id},
            "onnx": str(Path(written).absolute())}
