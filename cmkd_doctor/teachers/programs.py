"""Exported networks run on any number of rows: the batch an ONNX session or a
``torch.export`` program was exported for, the shapes it records, and the batching that
feeds it rows in batches of exactly that size.
"""

from __future__ import annotations

from typing import Any

import torch


def onnx_dims(model: Any) -> dict[str, list[int | None]]:
    """The dimensions of every tensor of an ONNX model whose shape onnx's shape inference
    (or the model itself) records, ``None`` for a dimension it cannot tell."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is a help, not a requirement
        inferred = model
    graph = inferred.graph
    return {info.name: [int(d.dim_value) if d.HasField("dim_value") else None
                        for d in info.type.tensor_type.shape.dim]
            for info in (*graph.value_info, *graph.output)
            if info.type.tensor_type.HasField("shape")}


def _program_input(module: Any) -> Any:
    """The example value of a program's first input (its shape as exported)."""
    for node in module.graph.nodes:
        value = node.meta.get("val")
        if node.op == "placeholder" and hasattr(value, "shape"):
            return value
    return None


def program_input_shape(module: Any) -> tuple[int, ...] | None:
    """The per-row input shape a program was exported with (its first input)."""
    value = _program_input(module)
    return None if value is None else tuple(int(d) for d in value.shape[1:])


def program_batch(module: Any) -> int | None:
    """The batch size a program was exported for when it is fixed (``torch.export.export
    (model, (x[:2],))`` without ``dynamic_shapes`` fixes it at 2), else ``None``."""
    value = _program_input(module)
    if value is None or not value.shape:
        return None
    size = value.shape[0]
    return size if isinstance(size, int) else None  # a free batch is a symbol


def onnx_batch(session: Any) -> int | None:
    """The batch size an onnxruntime session's first input is fixed at, else ``None``."""
    shape = session.get_inputs()[0].shape or [None]
    return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None


def in_batches(run: Any, batch: int | None) -> Any:
    """``run``, a network exported for a fixed batch of ``batch`` rows (``None``: any
    number), as a function of any number of rows (a tensor): the rows are fed in
    batches of exactly that size, the last padded with zeros and its padding dropped.
    Exporters fix the batch at the example's size unless told otherwise, and such a
    network refuses any other."""
    if batch is None:
        return run

    def batched(x: torch.Tensor) -> torch.Tensor:
        parts = []
        for start in range(0, len(x), batch):
            part = x[start:start + batch]
            short = batch - len(part)
            if short:
                part = torch.cat([part, part.new_zeros((short, *part.shape[1:]))])
            out = run(part)
            parts.append(out[:len(out) - short] if short else out)
        return torch.cat(parts) if parts else run(x.new_zeros((batch, *x.shape[1:])))[:0]

    return batched
