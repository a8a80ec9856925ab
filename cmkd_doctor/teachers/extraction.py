"""Middle-layer features for ranking (paper Appendix B.4, note 2).

Algorithm 1 can rank the channels of any layer, not only the input. ``extract`` runs a
torchvision backbone (architecture by name, weights from a local ``.safetensors`` file,
never downloaded), a user's ONNX model or a ``torch.export`` program (``.pt2``) up to a
named layer. The input is a folder of
images (read with torchvision.io) or an array, and the result is written as ``.npy``,
one row per input. Spatial feature maps ``(n, C, H, W)`` are averaged over space to
``(n, C)`` (``pool="avg"``), so a row holds one value per channel of that layer;
``pool="flatten"`` keeps every position instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmkd_doctor.choices import POOLS
from cmkd_doctor.devices import resolve_device
from cmkd_doctor.errors import InputError, option_error
from cmkd_doctor.io.inputs import read_array
from cmkd_doctor.io.outputs import check_out_file, write_json, write_npy
from cmkd_doctor.schemas import stamp

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
POOLS.add("avg", lambda f: f.flatten(2).mean(-1) if f.dim() > 2 else f.flatten(1))
POOLS.add("flatten", lambda f: f.flatten(1))


@dataclass(frozen=True)
class ExtractOptions:
    layer: str
    backbone: str | None = None  # torchvision architecture name
    weights: str | None = None  # .safetensors state dict for the backbone
    onnx: str | None = None  # or a user's ONNX model
    program: str | None = None  # or a torch.export program (.pt2)
    size: int = 224
    batch_size: int = 64
    pool: str = "avg"
    device: str = "auto"  # auto: CUDA when present (cmkd_doctor.devices)

    @classmethod
    def of_model(cls, model: str, **given) -> ExtractOptions:
        """Options for ``--model``: an ``.onnx`` file, a ``.pt2`` program or an
        architecture name (with ``weights``), told apart by the suffix."""
        suffix = Path(model).suffix.lower()
        if suffix and suffix not in (".onnx", ".pt2"):
            raise InputError(f"--model {model}: expected an .onnx or .pt2 file, or a "
                             f"torchvision architecture name such as resnet18")
        field = {".onnx": "onnx", ".pt2": "program"}.get(suffix, "backbone")
        if field == "backbone" and given.get("weights") is None:
            raise InputError(f"--model {model} needs --weights FILE.safetensors: cmkd-doctor "
                             "never downloads weights")
        return cls(**given, **{field: model})

    def checked(self) -> ExtractOptions:
        if sum(x is not None for x in (self.backbone, self.onnx, self.program)) != 1:
            raise InputError("extract needs --backbone NAME (with --weights) or --onnx FILE, "
                             "one of them (or --model: either, or a .pt2 program)")
        POOLS.check(self.pool)
        if self.size < 8 or self.batch_size < 1:
            raise option_error("size", "at least 8 (and --batch-size at least 1)",
                               min(self.size, self.batch_size))
        resolve_device(self.device)  # a device that is not here is refused before any work
        return self


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--images {folder}: no such folder")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(f"--images {folder}: expected image files "
                         f"({', '.join(IMAGE_SUFFIXES)}); found none")
    return found


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """C libraries (libpng, libjpeg) print their own complaints to file descriptor 2;
    the one ``error:`` line is ours, so theirs go nowhere while an image decodes."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 to speak of
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_images(paths: list[Path], size: int) -> torch.Tensor:
    """RGB images resized to ``size`` squared, ImageNet-normalised: ``(n, 3, size, size)``."""
    import warnings

    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.functional import normalize, resize

    batch = []
    for path in paths:
        try:
            with warnings.catch_warnings(), _native_stderr_silenced():
                warnings.simplefilter("ignore", DeprecationWarning)
                image = decode_image(str(path), mode=ImageReadMode.RGB)
        except RuntimeError as exc:
            raise InputError(f"{path}: cannot be decoded as an image ({exc})") from exc
        image = resize(image, [size, size], antialias=True).float().div(255)
        batch.append(normalize(image, IMAGENET_MEAN, IMAGENET_STD))
    return torch.stack(batch)


def _backbone(options: ExtractOptions, device: torch.device):
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    from cmkd_doctor.teachers.whole_networks import load_architecture

    model = load_architecture(options.backbone, options.weights, "--backbone")
    nodes = get_graph_node_names(model.eval())[1]
    modules = {name for name, _ in model.named_modules() if name}
    if options.layer not in nodes and options.layer not in modules:
        close = [n for n in nodes if options.layer in n][:6] or nodes[-6:]
        raise option_error("layer", f"a node of {options.backbone} such as "
                           f"{', '.join(close)}", options.layer)
    extractor = create_feature_extractor(model, return_nodes={options.layer: "out"})
    extractor = extractor.to(device).eval()
    from cmkd_doctor.teachers.model_runs import bounded

    return bounded(lambda x: extractor(x.to(device))["out"], f"--backbone {options.backbone}")


def _program(options: ExtractOptions, device: torch.device):
    """A torch.export program's values at ``options.layer``: a node name or a module path
    (in a program ``derive-teacher`` masked, the masked layer reads masked values)."""
    from cmkd_doctor.teachers.model_runs import bounded
    from cmkd_doctor.teachers.programs import in_batches, program_batch
    from cmkd_doctor.teachers.whole_networks import load_program, program_features, program_node

    program, recorded = load_program(options.program, "--model")
    module = program.module().to(device)
    features = program_features(module, program_node(module, options.layer, recorded))
    return in_batches(bounded(lambda x: features(x.to(device)), f"--model {options.program}"),
                      program_batch(module))


def _onnx(options: ExtractOptions):
    from cmkd_doctor.teachers.model_runs import OnnxSession, read_onnx
    from cmkd_doctor.teachers.programs import in_batches, onnx_batch

    what = f"--onnx {options.onnx}"
    model = read_onnx(options.onnx, what)
    import onnx
    from onnx.utils import Extractor

    inputs = [i.name for i in model.graph.input
              if i.name not in {t.name for t in model.graph.initializer}]
    names = {o for node in model.graph.node for o in node.output}
    if options.layer not in names:
        listed = [n for n in names if options.layer in n][:6] or sorted(names)[-6:]
        raise option_error("layer", f"a tensor of {options.onnx} such as {', '.join(listed)}",
                           options.layer)
    # the extractor needs the tensor's type: infer it, else declare it float of unknown
    # shape (a valid model need not record the types of its intermediate tensors)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is a help, not a requirement
        pass
    known = {v.name for v in (*model.graph.value_info, *model.graph.output,
                              *model.graph.input)}
    if options.layer not in known:
        model.graph.value_info.append(
            onnx.helper.make_tensor_value_info(options.layer, onnx.TensorProto.FLOAT, None))
    sub = Extractor(model).extract_model(inputs[:1], [options.layer])
    session = OnnxSession(sub, what)  # a signal or the time limit can stop its runs
    name = session.get_inputs()[0].name
    return in_batches(lambda x: torch.from_numpy(session.run({name: x.cpu().numpy()})[0]),
                      onnx_batch(session))


@dataclass(frozen=True)
class Layer:
    """A layer a model offers to ``--layer``: the name ``extract``, ``derive-teacher
    --model`` and ``distill --model`` take, the shape of its output for one batch (a
    free dimension is ``None``), the operator or module class that computes it, and
    (in a ``.pt2`` program) the module path it is computed in."""

    name: str
    shape: tuple[int | None, ...] | None
    kind: str
    module: str | None = None


def list_layers(model: str, weights: str | Path | None = None,
                input_shape: tuple[int, ...] | None = None) -> list[Layer]:
    """Every layer of ``model`` that ``--layer`` can name, in the order they are computed:
    the tensors of an ONNX model (as its exporter named them), the nodes of a
    ``torch.export`` program (``.pt2``), or the modules of an architecture by name (run
    once on zeros of ``input_shape``, one input without the batch, default 3 x 224 x
    224; ``weights`` are not needed to list them)."""
    from cmkd_doctor.teachers.programs import onnx_dims
    from cmkd_doctor.teachers.whole_networks import _module_paths, load_network

    if not Path(model).suffix:
        return _architecture_layers(model, weights, input_shape or (3, 224, 224))
    kind, network, _ = load_network(model, weights)  # the files derive-teacher reads
    if kind == "onnx":
        dims = onnx_dims(network)
        return [Layer(out, None if out not in dims else tuple(dims[out]), node.op_type)
                for node in network.graph.node for out in node.output if out]
    found = []
    for node in network.graph.nodes:  # a program's operations
        if node.op != "call_function":
            continue
        value = node.meta.get("val")
        shape = (tuple(int(d) if isinstance(d, int) else None for d in value.shape)
                 if hasattr(value, "shape") else None)
        target = str(node.target)  # aten.relu.default: relu
        paths = _module_paths(node)
        found.append(Layer(node.name, shape, target.split(".")[-2] if "." in target
                           else target, paths[-1] if paths else None))
    return found


def _architecture_layers(name: str, weights: str | Path | None,
                         input_shape: tuple[int, ...]) -> list[Layer]:
    from cmkd_doctor.teachers.whole_networks import ARCHITECTURES, load_architecture
    from cmkd_doctor.training.student_networks import named_model

    network = (load_architecture(name, weights) if weights is not None
               else named_model(name, "--model"))
    if network is None:
        raise option_error("model", ARCHITECTURES, name)
    seen: dict[str, list] = {}
    hooks = [module.register_forward_hook(
        lambda _m, _a, out, name=path: seen.setdefault(name, []).append(
            tuple(out.shape) if isinstance(out, torch.Tensor) else None))
        for path, module in network.named_modules() if path]
    try:
        with torch.no_grad():
            network.eval()(torch.zeros((1, *input_shape)))
    except Exception as exc:  # noqa: BLE001 - a network raises many kinds on a bad shape
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--model {name} cannot read an input of shape "
                         f"{' x '.join(map(str, input_shape))} ({first[:200]}); give "
                         "--input-shape") from None
    finally:
        for hook in hooks:
            hook.remove()
    modules = dict(network.named_modules())
    # a module run several times in one pass (a shared ReLU) cannot be masked alone
    return [Layer(path, shapes[0], type(modules[path]).__name__ + (
        f" (runs {len(shapes)} times)" if len(shapes) > 1 else ""))
        for path, shapes in seen.items()]


@torch.no_grad()
def extract(options: ExtractOptions, images: str | Path | None = None,
            array: str | Path | None = None) -> tuple[np.ndarray, list[str]]:
    """Features of every input at ``options.layer``; returns them and the input names."""
    options = options.checked()
    if (images is None) == (array is None):
        raise InputError("extract needs --images DIR or --array FILE, one of them")
    if images is not None:
        paths = list_images(images)
        names = [str(p.relative_to(images)) for p in paths]
        loader = lambda rows: load_images([paths[i] for i in rows], options.size)  # noqa: E731
        n = len(paths)
    else:
        data, source = read_array(array)
        if data.dtype.kind not in "biuf":
            raise InputError(f"{source}: must be numeric; got dtype {data.dtype}")
        if data.ndim == 0 or len(data) == 0:
            raise InputError(f"{source}: holds no rows (shape {data.shape}); extract needs "
                             "at least one input")
        names = [str(i) for i in range(len(data))]
        if data.dtype == np.uint8 and data.ndim == 4 and data.shape[1] == 3:
            # uint8 image arrays (n, 3, H, W) are scaled and normalised like image files
            def loader(rows: list[int]) -> torch.Tensor:
                from torchvision.transforms.functional import normalize

                batch = torch.tensor(np.asarray(data[rows[0] : rows[-1] + 1])).float() / 255
                return normalize(batch, IMAGENET_MEAN, IMAGENET_STD)
        else:
            loader = lambda rows: torch.tensor(  # noqa: E731
                np.asarray(data[rows[0] : rows[-1] + 1], dtype=np.float32))
        n = len(data)
    device = resolve_device(options.device)
    run = (_backbone(options, device) if options.backbone else
           _program(options, device) if options.program else _onnx(options))
    chunks = []
    for start in range(0, n, options.batch_size):
        rows = list(range(start, min(n, start + options.batch_size)))
        chunks.append(POOLS[options.pool](run(loader(rows)).float()).cpu())
    features = torch.cat(chunks).numpy()
    bad = ~np.isfinite(features).reshape(len(features), -1).all(axis=1)
    if bad.any():
        raise InputError(f"--layer {options.layer}: the features of {int(bad.sum())} of "
                         f"{len(features)} inputs hold NaN or Inf (the first: "
                         f"{names[int(np.argmax(bad))]}); check the weights and the inputs")
    return features, names


def write_features(features: np.ndarray, names: list[str], out: str | Path,
                   options: ExtractOptions) -> Path:
    """``out`` (.npy) and ``out`` with ``.json``: options and the input of each row."""
    out = Path(out)
    write_npy(out, features.astype(np.float32))
    write_json(out.with_suffix(".json"), stamp("features", {
        "layer": options.layer, "backbone": options.backbone, "weights": options.weights,
        "onnx": options.onnx, "program": options.program, "pool": options.pool,
        "size": options.size,
        "shape": list(features.shape), "rows": names}))
    return out


def extract_to(out: str | Path, options: ExtractOptions, images: str | Path | None = None,
               array: str | Path | None = None) -> tuple[np.ndarray, Path]:
    """``extract``: features of every input, written to ``out`` (checked before any
    work) with the JSON sidecar of :func:`write_features`."""
    out = Path(out)
    if out.suffix.lower() != ".npy":
        raise InputError(f"--out {out}: features are written as .npy")
    check_out_file(out, "--out")
    options = options.checked()
    features, names = extract(options, images=images, array=array)
    return features, write_features(features, names, out, options)
