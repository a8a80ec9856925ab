"""Whole teacher networks masked where the ranking was taken (paper App. B.4: channels of a
middle layer nullified "during the distillation process").

A derived teacher at the feature level is a mask in front of a head
(:class:`~cmkd_doctor.teachers.masks.Teacher`). A user's teacher is a network from raw input to
logits; :func:`mask_onnx_layer` puts the same mask inside it, right after the layer whose
features ``extract`` took and ``rank`` ranked: every nullified channel of that tensor is
replaced by its fill value (spatial maps broadcast the per-channel value over their
positions), so a channel-pooled feature of the masked map is the fill, as at the feature
level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmkd_doctor.errors import InputError, option_error
from cmkd_doctor.io.files import regular_file
from cmkd_doctor.teachers.masks import derived_mask
from cmkd_doctor.teachers.model_runs import ModelTimeout, OnnxSession, bounded, read_onnx
from cmkd_doctor.teachers.programs import (
    in_batches,
    onnx_batch,
    onnx_dims,
    program_batch,
    program_input_shape,
)

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
    dims = onnx_dims(found).get(layer)
    rank = None if dims is None else len(dims)
    if rank is not None and channel_axis >= rank:
        raise option_error("channel-axis", f"an axis of {layer}, which has {rank}",
                           channel_axis)
    width = None if dims is None else dims[channel_axis]
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


# ---- torch teachers: an architecture by name with its weights, or a torch.export program

MASK_MODULE = "cmkd_mask"  # the submodule that masks the ranked layer
EXTRA_FILE = "cmkd_doctor.json"  # what a masked .pt2 records about its mask
ARCHITECTURES = ("a torchvision architecture (or a timm one, when timm is installed) such as "
                 "resnet18, resnet50 or vgg16")


class Mask(torch.nn.Module):
    """The mask as a module (buffers ``keep`` and ``fill``), so torch.export and the ONNX
    exporter carry it as named constants inside the network: channel c along ``axis``
    is kept where ``keep[c]`` is 1, else replaced by its fill."""

    def __init__(self, keep: np.ndarray, fill: np.ndarray, axis: int):
        super().__init__()
        self.axis = axis
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.float32))
        self.register_buffer("fill", torch.tensor((~keep) * fill, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [-1] + [1] * (x.dim() - self.axis - 1)
        return x * self.keep.reshape(shape) + self.fill.reshape(shape)


def load_architecture(name: str, weights: str | Path | None, option: str = "--model"):
    """The torchvision (or timm) architecture ``name`` with the state dict of ``weights``
    (.safetensors; never downloaded), in eval mode. A classifier of another class count
    than the architecture's default is built with the count its weights hold."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from cmkd_doctor.training.student_networks import named_model

    if weights is None:
        raise InputError(f"{option} {name} needs --weights FILE.safetensors: cmkd-doctor "
                         f"never downloads weights")
    try:
        state = load_file(regular_file(weights, f"--weights {weights}"))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"--weights {weights}: cannot be read as .safetensors ({exc})"
                         ) from exc
    matrices = [v for v in state.values() if v.dim() == 2]
    model = named_model(name, option, matrices[-1].shape[0] if matrices else None)
    if model is None:
        raise option_error(option.lstrip("-"), ARCHITECTURES, name)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"--weights {weights}: not a {name} state dict ({first})") from exc
    return model.eval()


def load_program(path: str | Path, option: str = "--model") -> tuple[Any, dict[str, Any]]:
    """A ``torch.export`` program (.pt2) and what cmkd-doctor recorded in it (the name of
    a masked layer's node); the program as a module with its graph."""
    import logging

    from cmkd_doctor.teachers.archives import check_program_archive, tensors_only

    path = regular_file(path, f"{option} {path}")
    check_program_archive(path, option)  # nothing pickled, no compiled code
    extra = {EXTRA_FILE: ""}
    logger = logging.getLogger("torch.export")  # it logs a traceback before raising
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with tensors_only():
            program = torch.export.load(path, extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds on a bad file
        raise InputError(f"{option} {path}: cannot be read as a torch.export program "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                         ) from exc
    finally:
        logger.setLevel(level)
    return program, _recorded(extra[EXTRA_FILE], path, option)


def _recorded(text: str, path: Path, option: str) -> dict[str, Any]:
    """What cmkd-doctor recorded in a program (its ``extra/cmkd_doctor.json``): a JSON
    object whose ``masked``, when present, maps layer names to node names."""
    if not text:
        return {}
    try:
        found = json.loads(text)
    except (ValueError, RecursionError):
        found = None
    masked = found.get("masked", {}) if isinstance(found, dict) else None
    if not isinstance(masked, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in masked.items()):
        raise InputError(f"{option} {path}: its extra/{EXTRA_FILE} is not the record "
                         "cmkd-doctor writes (a JSON object whose 'masked' maps layer names "
                         "to node names)")
    return found


def _module_paths(node: Any) -> list[str]:
    return [value[0] for value in node.meta.get("nn_module_stack", {}).values()]


def program_node(module: Any, layer: str, recorded: dict[str, Any] | None = None) -> Any:
    """The node of a program's graph that ``layer`` names: a node name, or a module path
    (the last node computed inside that module: its output). In a program this tool
    masked, the masked layer's name reads the masked node."""
    layer_name = (recorded or {}).get("masked", {}).get(layer, layer)
    nodes = [n for n in module.graph.nodes if n.op == "call_function"]
    for node in nodes:
        if node.name == layer_name:
            return node
    inside = [n for n in nodes if layer_name in _module_paths(n)]
    if inside:
        return inside[-1]
    close = [n.name for n in nodes if layer in n.name][:6] or [n.name for n in nodes][-6:]
    raise option_error("layer", f"a node or module of the program such as "
                       f"{', '.join(close)}", layer)


def program_features(module: Any, node: Any):
    """A function of a batch: the values of ``node`` of the program ``module`` (run as far
    as that node, with torch.fx's interpreter)."""
    class Reached(Exception):
        pass

    class UpTo(torch.fx.Interpreter):
        value: Any = None

        def run_node(self, n):
            value = super().run_node(n)
            if n is node:
                self.value = value
                raise Reached
            return value

    @torch.no_grad()
    def features(x):
        interpreter = UpTo(module)
        interpreter.extra_traceback = False
        try:
            interpreter.run(x)
        except Reached:
            return interpreter.value
        raise AssertionError(f"{node.name} was never computed")  # pragma: no cover

    return features


def _masked_torch(network: Any, kind: str, layer: str, keep: np.ndarray, fill: np.ndarray,
                  channel_axis: int, example: Any, recorded: dict[str, Any]):
    """A copy of the torch ``network`` with the mask module after ``layer``: a forward
    hook on the module ``layer`` (an architecture), or a node inserted in the graph after
    the node ``layer`` names (a program). The layer's width is checked on ``example``."""
    import copy

    mask = Mask(keep, fill, channel_axis)
    if kind == "architecture":
        masked = copy.deepcopy(network)
        modules = dict(masked.named_modules())
        if layer not in modules or not layer:
            close = [n for n in modules if n and layer in n][:6] or list(modules)[-6:]
            raise option_error("layer", f"a module of the network such as "
                               f"{', '.join(close)}", layer)
        seen: list[tuple[int, ...]] = []

        def look(_module, _args, out) -> None:
            seen.append(tuple(out.shape))

        handle = modules[layer].register_forward_hook(look)
        with torch.no_grad():
            masked(example)
        handle.remove()
        if len(seen) != 1:  # a hook would mask every call of a shared module
            raise InputError(f"--layer {layer}: the module runs {len(seen)} times in one "
                             f"forward pass (a shared module, such as a block's ReLU); "
                             f"name a module that runs once, such as the block itself")
        shape = seen[0]
        masked.add_module(MASK_MODULE, mask)
        modules[layer].register_forward_hook(lambda _m, _a, out: masked.cmkd_mask(out))
    else:
        masked = copy.deepcopy(network)
        node = program_node(masked, layer, recorded)
        shape = tuple(node.meta["val"].shape)
        masked.add_submodule(MASK_MODULE, mask)
        with masked.graph.inserting_after(node):
            new = masked.graph.call_module(MASK_MODULE, (node,))
        node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
        masked.recompile()
    if channel_axis >= len(shape):
        raise option_error("channel-axis", f"an axis of {layer}, which has {len(shape)}",
                           channel_axis)
    if shape[channel_axis] != len(keep):
        raise InputError(f"--layer {layer}: {shape[channel_axis]} channels on axis "
                         f"{channel_axis}, but the ranking has {len(keep)}; rank the "
                         f"features of this layer")
    return masked


def _export(module: Any, example: Any, free: bool = True):
    """``module`` as a torch.export program with a free batch size, or (``free`` false:
    a program exported for a fixed batch keeps it) the example's."""
    if not free:
        return torch.export.export(module, (example,))
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def _masked_node_name(program: Any) -> str:
    return [n.name for n in program.graph.nodes if n.op == "call_function"
            and any(p.split(".")[-1] == MASK_MODULE for p in _module_paths(n))][-1]


def _name_masked_tensor(model: Any, layer: str) -> Any:
    """Rename, in an ONNX export of a masked torch network, the mask's output to
    ``layer`` (a tensor already called so becomes ``layer + RAW_SUFFIX``), so that
    ``extract --onnx --layer NAME`` reads the masked features as it does in a masked ONNX
    teacher."""
    masks = [n for n in model.graph.node if any(
        p.key == "namespace" and f"/{MASK_MODULE}: " in p.value for p in n.metadata_props)]
    if not masks:  # pragma: no cover - the exporter dropped its metadata
        return model
    masked = masks[-1].output[0]

    def rename(old: str, new: str) -> None:
        for node in model.graph.node:
            node.input[:] = [new if name == old else name for name in node.input]
            node.output[:] = [new if name == old else name for name in node.output]
        for value in (*model.graph.output, *model.graph.value_info):
            if value.name == old:
                value.name = new

    if any(layer in node.output for node in model.graph.node):
        rename(layer, layer + RAW_SUFFIX)
    rename(masked, layer)
    return model


def load_network(model: str | Path, weights: str | Path | None = None,
                 option: str = "--model") -> tuple[str, Any, dict[str, Any]]:
    """A user's whole network: ``("onnx", ModelProto, {})``, ``("program", module,
    recorded)`` for a ``.pt2`` or ``("architecture", module, {})`` for a name with
    ``weights``."""
    suffix = Path(str(model)).suffix.lower()
    if suffix == ".onnx":
        return "onnx", read_onnx(model, f"{option} {model}"), {}
    if suffix == ".pt2":
        program, recorded = load_program(model, option)
        return "program", program.module(), recorded
    if suffix:
        raise InputError(f"{option} {model}: expected an .onnx or .pt2 file, or "
                         f"{ARCHITECTURES}")
    return "architecture", load_architecture(str(model), weights, option), {}


def parse_shape(text: str | None, option: str) -> tuple[int, ...] | None:
    """``"3,224,224"`` as ``(3, 224, 224)``: the shape of one input."""
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise option_error(option.lstrip("-"), "positive sizes separated by commas, such "
                           "as 3,224,224", text)
    return shape


def mask_network(load_run: Any, model: str | Path | None, layer: str | None,
                 spec: Any, onnx_out: str | Path | None = None,
                 pt2_out: str | Path | None = None, channel_axis: int = 1,
                 weights: str | Path | None = None,
                 input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """``derive-teacher --model TEACHER --layer NAME``: the user's whole teacher with the
    mask of ``spec`` (mode, ratio, fill, seed) after its layer ``layer``, written as ONNX
    (``onnx_out``) and, for a torch teacher, as a torch.export program (``pt2_out``);
    returns what was done (the ``network`` document's fields).

    TEACHER is an ONNX model (``layer`` one of its tensors), a ``.pt2`` program (a node
    or module path) or an architecture name with ``weights`` (a module: forward hook).
    ``load_run()`` gives the rank run (:func:`cmkd_doctor.teachers.derivation.derive_network`
    passes its run directory's loader; it is called once the options are checked). Its
    ranking must be of the features ``extract`` took at ``layer``
    (pooled to one value per channel): its channel count is the layer's. The fill values
    are those features' means on the run's training rows, as for the feature-level
    teachers, so a pooled feature of a nullified channel is its fill.
    """
    from cmkd_doctor.io.outputs import write_bytes, write_json
    from cmkd_doctor.schemas import stamp

    spec, onnx_out, pt2_out = _checked_mask_options(model, layer, spec, onnx_out, pt2_out,
                                                    channel_axis)
    kind, network, recorded = load_network(model, weights)
    if kind == "onnx" and pt2_out is not None:
        raise InputError(f"--export-pt2: {model} is ONNX; its masked network is written "
                         f"with --export-onnx")
    run = load_run()
    nullified, keep, fill = derived_mask(run, spec, run.rows(run.teacher_side,
                                                             torch.device("cpu")))
    fill = fill.cpu().numpy().astype(np.float32)
    # the record of what was masked: beside the network as JSON, and inside it
    record = {"name": spec.name, "mode": spec.mode, "ratio": spec.ratio, "seed": spec.seed,
              "fill": spec.fill, "model": str(Path(model).absolute())
              if kind != "architecture" else str(model), "format": kind, "layer": layer,
              "channel_axis": channel_axis, "modality": run.teacher_side,
              "n_channels": len(keep), "nullified": nullified.tolist(),
              "mask": keep.astype(int).tolist(), "fill_values": fill.tolist(),
              "rank": {"run_id": run.run_id}}
    masking = _Masking(network, kind, str(model), layer, keep, fill, channel_axis, recorded,
                       props={"cmkd_doctor.mode": spec.mode,
                              "cmkd_doctor.ratio": f"{spec.ratio:g}",
                              "cmkd_doctor.layer": layer, "cmkd_doctor.run_id": run.run_id,
                              "cmkd_doctor.record": json.dumps(record)})
    # every file is made before any is written
    files = (masking.onnx_files(onnx_out) if kind == "onnx"
             else masking.torch_files(input_shape, onnx_out, pt2_out))
    written: dict[str, str | None] = {"onnx": None, "pt2": None}
    for path, (key, data) in files.items():
        written[key] = str(write_bytes(path, data).absolute())
    document = stamp("network", {**record, **written})
    for path in dict.fromkeys(p.with_suffix(".json") for p in files):  # the sidecars last
        write_json(path, document)
    return document


def _checked_mask_options(model: str | Path | None, layer: str | None, spec: Any,
                          onnx_out: str | Path | None, pt2_out: str | Path | None,
                          channel_axis: int) -> tuple[Any, Path | None, Path | None]:
    """:func:`mask_network`'s options checked before anything is loaded: the checked
    spec and the two output paths."""
    from cmkd_doctor.io.outputs import check_out_file

    if model is None or layer is None or (onnx_out is None and pt2_out is None):
        raise InputError("--model, --layer and --export-onnx (or --export-pt2) go together: "
                         "the network, the tensor that was ranked, and where to write the "
                         "masked network")
    spec = spec.checked()
    if spec.source != "trained" or spec.refit:
        raise InputError("--model masks the given network: --from, --teacher and --refit "
                         "are for feature-level teachers")
    if channel_axis < 1:
        raise option_error("channel-axis", "1 or more (axis 0 is the batch)", channel_axis)
    onnx_out = None if onnx_out is None else check_out_file(onnx_out, "--export-onnx")
    pt2_out = None if pt2_out is None else check_out_file(pt2_out, "--export-pt2")
    if pt2_out is not None and pt2_out.suffix.lower() != ".pt2":
        raise InputError(f"--export-pt2 {pt2_out}: a torch.export program is written as .pt2")
    return spec, onnx_out, pt2_out


@dataclass(frozen=True)
class _Masking:
    """One network (``kind``: onnx, program or architecture) and the mask to apply
    after its ``layer``; ``props`` the record stored inside the files made."""

    network: Any
    kind: str
    model: str
    layer: str
    keep: np.ndarray
    fill: np.ndarray
    channel_axis: int
    recorded: dict[str, Any]
    props: dict[str, str]

    def onnx_files(self, onnx_out: Path | None) -> dict[Path, tuple[str, bytes]]:
        """The masked ONNX model's bytes, by path (an ONNX teacher)."""
        import onnx

        masked = mask_onnx_layer(self.network, self.layer, self.keep, self.fill,
                                 self.channel_axis)
        onnx.helper.set_model_props(masked, self.props)
        return {onnx_out: ("onnx", masked.SerializeToString())}

    def torch_files(self, input_shape: tuple[int, ...] | None, onnx_out: Path | None,
                    pt2_out: Path | None) -> dict[Path, tuple[str, bytes]]:
        """The masked torch teacher exported as a program (``pt2_out``) and through
        torch's ONNX exporter (``onnx_out``), by path."""
        shape = program_input_shape(self.network) if self.kind == "program" else input_shape
        if shape is None:
            raise InputError(f"--input-shape: the shape of one input of {self.model} (such "
                             f"as 3,224,224) is needed to export it")
        batch = program_batch(self.network) if self.kind == "program" else None
        example = torch.zeros((batch or 2, *shape))
        masked = _masked_torch(self.network, self.kind, self.layer, self.keep, self.fill,
                               self.channel_axis, example, self.recorded)
        program = _exported(lambda: _export(masked, example, free=batch is None),
                            f"--model {self.model}", "torch.export")
        files: dict[Path, tuple[str, bytes]] = {}
        if pt2_out is not None:
            extra = {EXTRA_FILE: json.dumps({**self.props, "masked": {
                self.layer: _masked_node_name(program)}})}
            files[pt2_out] = ("pt2", _program_bytes(program, extra))
        if onnx_out is not None:
            import onnx

            exported = _exported(lambda: _onnx_export(program), "--export-onnx",
                                 "torch's ONNX exporter")
            _name_masked_tensor(exported, self.layer)
            onnx.helper.set_model_props(exported, self.props)
            files[onnx_out] = ("onnx", exported.SerializeToString())
        return files


def _program_bytes(program: Any, extra: dict[str, str]) -> bytes:
    """A torch.export program as the bytes of its ``.pt2`` file, ``extra`` inside."""
    import io

    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files=extra)
    return buffer.getvalue()


def _exported(make: Any, option: str, exporter: str) -> Any:
    """What ``make`` exports, or one error line naming ``option`` when ``exporter``
    cannot export the network (data-dependent control flow, an unsupported operator)."""
    try:
        return make()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporters raise many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{option}: {exporter} cannot export the masked network "
                         f"({first[:300]})") from exc


def _onnx_export(program: Any) -> Any:
    """The ONNX model of a torch.export program (input ``input``, output ``logits``)."""
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        exported = torch.onnx.export(program, input_names=["input"],
                                     output_names=["logits"], dynamo=True, verbose=False)
    return exported.model_proto


# ---- whole networks in distill: teachers on raw modality-a rows, students on modality b


@dataclass(frozen=True)
class NetworkOptions:
    """``distill``'s networks (paper App. B.1, B.4): students of architecture ``student``
    on the raw rows ``student_inputs`` (modality b), and the whole teacher ``model``
    (masked after ``layer`` for the derived rows) run on the raw rows ``teacher_inputs``
    (modality a). Either half may be used alone: without ``model`` the teachers are the
    feature-level ones of the run; without ``student`` the students are MLPs on the
    run's features."""

    student: str | None = None
    student_inputs: str | None = None
    model: str | None = None
    teacher_inputs: str | None = None
    layer: str | None = None
    weights: str | None = None
    channel_axis: int = 1

    @property
    def used(self) -> bool:
        return self.student is not None or self.model is not None

    def checked(self) -> NetworkOptions:
        if (self.student is None) != (self.student_inputs is None):
            raise InputError("--student and --student-inputs go together: the architecture "
                             "and the raw modality-b rows it reads")
        if self.model is not None and (self.layer is None or self.teacher_inputs is None):
            raise InputError("--model needs --layer (where the ranked features were taken) "
                             "and --teacher-inputs (the raw modality-a rows it reads)")
        if self.model is None and (self.layer is not None or self.teacher_inputs is not None
                                   or self.weights is not None or self.channel_axis != 1):
            raise InputError("--layer, --teacher-inputs, --weights and --channel-axis go "
                             "with --model, the "
                             "whole teacher network")
        if self.channel_axis < 1:
            raise option_error("channel-axis", "1 or more (axis 0 is the batch)",
                               self.channel_axis)
        # files recorded as absolute paths: a command built from the record (the advice)
        # runs from any folder, and two files of one name in two folders stay apart
        model = self.model
        if model is not None and Path(model).suffix:  # a file, not an architecture
            model = str(Path(model).absolute())
        return replace(self, model=model, student_inputs=_absolute(self.student_inputs),
                       teacher_inputs=_absolute(self.teacher_inputs),
                       weights=None if self.weights is None
                       else str(Path(self.weights).absolute()))


def _absolute(spec: str | None) -> str | None:
    """An array spec (``file.npy``, ``file.npz:key``) with its file's absolute path."""
    from cmkd_doctor.io.inputs import parse_source

    if spec is None:
        return None
    source = parse_source(spec)
    return str(replace(source, path=source.path.absolute()))


def read_raw(spec: str, n_rows: int, option: str) -> np.ndarray:
    """A raw input array (images, spectrograms) of ``n_rows`` rows in the rank run's row
    order, as read (``.npy`` memory-mapped), checked to be numeric and finite; ``option``
    names it in errors."""
    from cmkd_doctor.io.inputs import check_finite, read_array

    array, source = read_array(spec)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{option} {spec}: must be numeric; got dtype {array.dtype}")
    if array.ndim < 2:
        raise InputError(f"{option} {spec}: expected one input per row (n, ...); got shape "
                         f"{array.shape}")
    if len(array) != n_rows:
        raise InputError(f"{option} {spec}: {len(array)} rows, but the rank run has "
                         f"{n_rows}; give the raw inputs of the ranked rows, in their order")
    check_finite(array, source)
    return array


class NetworkTeacher(torch.nn.Module):
    """A whole teacher network (ONNX on onnxruntime, or a torch module) as a function of
    flat raw rows: each row is reshaped to the network's input ``shape``, and the logits
    come back. A module, so the students' soft labels and the teacher's metrics are
    computed as for a feature-level teacher."""

    def __init__(self, kind: str, network: Any, shape: tuple[int, ...], device: Any,
                 what: str = "--model"):
        super().__init__()
        self.kind, self.shape = kind, tuple(shape)
        if kind == "onnx":  # run where a signal or the time limit can stop it
            self.session = OnnxSession(network, what)
            name = self.session.get_inputs()[0].name
            self.run = in_batches(lambda rows: torch.from_numpy(np.asarray(
                self.session.run({name: rows.cpu().numpy()})[0])),
                onnx_batch(self.session))
        else:  # a program's module was exported in one mode and cannot switch
            self.network = network.to(device)
            if kind == "architecture":
                self.network.eval()
            self.run = in_batches(bounded(self.network, what), program_batch(self.network)
                                  if kind == "program" else None)

    def train(self, mode: bool = True) -> NetworkTeacher:
        """A teacher always runs as in evaluation (an exported program cannot switch)."""
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x.reshape(len(x), *self.shape).float()).to(x.device)


def whole_teachers(options: NetworkOptions, feature_rows: Any, run: Any, inputs: np.ndarray,
                   n_classes: int, device: Any):
    """A function of a teacher spec (``None``: the network as given) -> the whole teacher
    with that spec's mask after ``options.layer`` (the mask and fill of the ranking, as
    ``derive-teacher --model`` writes it), run on raw modality-a rows. The network is
    checked on two rows of ``inputs`` first: it must take them and give ``n_classes``
    logits."""

    kind, network, recorded = load_network(options.model, options.weights)
    shape = tuple(inputs.shape[1:])
    example = torch.tensor(np.asarray(inputs[:2], dtype=np.float32)).to(device)
    try:
        # moves a torch network to the device
        given = NetworkTeacher(kind, network, shape, device, f"--model {options.model}")
        with torch.no_grad():
            out = given(example)
    except ModelTimeout:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime and torch raise many kinds
        first = getattr(exc, "cause", None) or (str(exc).splitlines()[0] if str(exc)
                                                else type(exc).__name__)
        raise InputError(f"--model {options.model} cannot read the rows of "
                         f"--teacher-inputs {options.teacher_inputs} (each "
                         f"{' x '.join(map(str, shape))}): {first[:300]}") from None
    if tuple(out.shape) != (2, n_classes):
        raise InputError(f"--model {options.model} gives outputs of shape "
                         f"{tuple(out.shape[1:])} per row; expected {n_classes} logits")

    def teacher(spec: Any):
        if spec is None or spec.mode == "regular":
            return given
        _, keep, fill = derived_mask(run, spec, feature_rows)
        fill = fill.cpu().numpy().astype(np.float32)
        if kind == "onnx":
            masked = mask_onnx_layer(network, options.layer, keep, fill, options.channel_axis)
        else:
            masked = _masked_torch(network, kind, options.layer, keep, fill,
                                   options.channel_axis, example, recorded)
        return NetworkTeacher(kind, masked, shape, device, f"--model {options.model}")

    return teacher
