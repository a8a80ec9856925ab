"""Student networks on raw inputs (paper App. B.1): the paper's small CNNs built in, and
torchvision or timm architectures by name, trained many seeds at once.

A student network reads one row of a raw array (an image ``C x H x W``, a spectrogram
``H x W`` or ``C x H x W``), stored flat like every row cmkd-doctor streams: the
:class:`ArchNet` standardises the flat row with the fit rows' per-element mean and
standard deviation (as the feature-level networks do, :func:`cmkd_doctor.training.mlp.
standardisation`), reshapes it to its input shape and runs the architecture.

:class:`StackedNetworks` holds S members of one architecture as one module for the
training engine: their weights stacked with ``torch.func.stack_module_state`` and run
with ``torch.func.vmap`` on a GPU, so S seeds train in one pass. On the CPU the members
of a stack run one after another inside each step (vmap's batched convolutions are
slower there); the stack still shares one data pass and one optimiser step. An
architecture with running statistics (BatchNorm) cannot update them under ``vmap``: its
members always run in turn, each updating its own statistics.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cmkd_doctor.devices import require_memory
from cmkd_doctor.errors import InputError
from cmkd_doctor.registry import Registry


def _conv_out(size: int, kernel: int, padding: int = 0, stride: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def lenet5(shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """LeNet-5 (LeCun et al.; the paper's image backbone, App. B.1): two 5 x 5
    convolutions (6 and 16 maps) each with ReLU and 2 x 2 max pooling, then 120 -> 84 ->
    K. A 28 x 28 input is padded by 2, as MNIST is for LeNet-5's 32 x 32."""
    channels, height, width = shape
    pad = 2 if min(height, width) < 32 else 0
    h, w = (_conv_out(_conv_out(s, 5, pad) // 2, 5) // 2 for s in (height, width))
    if min(h, w) < 1:
        raise InputError(f"lenet5 needs inputs of at least 12 x 12 (it was made for 28 x 28 "
                         f"and 32 x 32); got {height} x {width}")
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * h * w, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, n_classes))


def cnn3(shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A 3-layer CNN (the paper's audio student, App. B.1, whose widths it does not
    give): 3 x 3 convolutions of 16, 32 and 32 maps with ReLU, 2 x 2 max pooling after
    the first two, and a linear layer from the last maps to K. The maps are flattened,
    not averaged, so the head knows which frequency band a pattern came from (on
    AV-MNIST's spectrograms global pooling cost 24 points: BENCHMARKS.md)."""
    channels, height, width = shape
    if min(height, width) < 4:
        raise InputError(f"cnn3 needs inputs of at least 4 x 4; got {height} x {width}")
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(32 * (height // 4) * (width // 4), n_classes))


BUILT_IN: Registry[Callable[[tuple[int, ...], int], nn.Module]] = Registry("student")
BUILT_IN.add("lenet5", lenet5, "LeNet-5 for images such as C x 28 x 28 (paper App. B.1)")
BUILT_IN.add("cnn3", cnn3, "a 3-layer CNN for spectrograms or small images (paper App. B.1)")


def named_model(name: str, option: str, n_classes: int | None = None,
                in_channels: int | None = None) -> nn.Module | None:
    """The untrained torchvision (or timm, when installed) architecture ``name`` with
    ``n_classes`` outputs (and, for timm, ``in_channels`` inputs), or ``None`` when
    neither knows the name. An architecture without a class count is built as it is."""
    try:
        from torchvision.models import get_model, list_models
    except ImportError:
        raise InputError(f"{option} {name}: architectures by name need torchvision: pip "
                         "install 'cmkd-doctor[vision]'") from None
    classes = {} if n_classes is None else {"num_classes": n_classes}
    if name in list_models():
        build, given = (lambda **kw: get_model(name, weights=None, **kw)), classes
    else:
        try:
            import timm
        except ImportError:
            return None
        if name not in timm.list_models():
            return None
        build = lambda **kw: timm.create_model(name, pretrained=False, **kw)  # noqa: E731
        given = {**classes, **({} if in_channels is None else {"in_chans": in_channels})}
    try:
        return build(**given)
    except TypeError:  # an architecture without a class count
        return build()


def row_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The input shape of a student for rows of ``shape``: ``(C, H, W)``; a row
    ``(H, W)`` (a spectrogram) is one channel."""
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return tuple(shape)
    raise InputError(f"a network student reads rows C x H x W or H x W (images, "
                     f"spectrograms); these rows are {' x '.join(map(str, shape)) or 'scalars'}")


@dataclass(frozen=True)
class Architecture:
    """A student architecture for rows of ``shape`` and ``n_classes`` outputs."""

    name: str
    shape: tuple[int, ...]
    n_classes: int

    def body(self) -> nn.Module:
        shape = row_shape(self.shape)
        if self.name in BUILT_IN.names():
            return BUILT_IN[self.name](shape, self.n_classes)
        model = named_model(self.name, "--student", self.n_classes, shape[0])
        if model is None:
            raise InputError(f"--student must be one of {', '.join(BUILT_IN.names())} or a "
                             f"torchvision (or timm, when installed) architecture such as "
                             f"resnet18; got {self.name!r}")
        return model

    def new(self, init_seed: int) -> ArchNet:
        """A freshly initialised network drawn from ``init_seed`` alone (the global RNG is
        left as it was), with the identity standardisation."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return ArchNet(self.body(), self.shape)

    def _shapes_only(self) -> ArchNet:
        """The network on the meta device: shapes without memory, to check and size it."""
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return ArchNet(self.body(), self.shape).eval()  # the global RNG as it was

    def checked(self, batch_rows: int = 2, device: torch.device | None = None
                ) -> Architecture:
        """Refuse, before any training, an architecture that cannot read these rows:
        a forward pass of two zero rows must give ``(2, n_classes)`` logits. It runs on
        shapes alone first (the meta device), so rows too large for the network (a
        linear layer over millions of inputs) are refused with the memory it would
        need, before anything is allocated: the memory one member needs to train on
        minibatches of ``batch_rows`` rows on ``device`` (:meth:`member_bytes`), and
        the two-row pass on the CPU."""
        shown_shape = " x ".join(map(str, self.shape))
        try:
            sized = self._shapes_only()
            with torch.no_grad():
                sized(torch.zeros(2, sized.d_in, device="meta"))
            need = 4 * (sum(p.numel() for p in sized.parameters())
                        + 2 * sum(activations(sized)))
            train_need = self.member_bytes(batch_rows)
        except (RuntimeError, ValueError, NotImplementedError):
            need = train_need = 0  # an operator without a meta kernel: the pass below tells
        require_memory(need, f"--student {self.name} on rows of shape {shown_shape} (its "
                       "weights and two rows through it)", torch.device("cpu"))
        require_memory(train_need, f"--student {self.name} on rows of shape {shown_shape} "
                       f"(one student training on minibatches of {batch_rows} rows: its "
                       "weights, gradients and Adam's moments, and the activations)",
                       device or torch.device("cpu"))
        net = self.new(0).eval()
        try:
            with torch.no_grad():
                out = net(torch.zeros(2, net.d_in))
        except (RuntimeError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"--student {self.name} cannot read rows of shape "
                             f"{shown_shape} ({first})") from None
        if tuple(out.shape) != (2, self.n_classes):
            raise InputError(f"--student {self.name} gives outputs of shape "
                             f"{tuple(out.shape[1:])} for rows of shape {self.shape}; "
                             f"expected {self.n_classes} logits")
        return self

    def member_bytes(self, batch_size: int) -> int:
        """Bytes one member takes to train: its weights four times (weights, gradients,
        Adam's two moments) and a minibatch of every layer's activations and their
        gradients (:func:`activations`), sized on shapes alone."""
        net = self._shapes_only()
        params = sum(p.numel() for p in net.parameters())
        return 4 * (4 * params + 3 * batch_size * sum(activations(net)))


def activations(net: ArchNet) -> list[int]:
    """The elements each layer of ``net`` outputs for one row (one forward pass)."""
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _a, out: sizes.append(out.numel()))
             for m in net.modules() if not list(m.children())]
    was = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, net.d_in, device=net.mean.device))
    finally:
        net.train(was)
        for hook in hooks:
            hook.remove()
    return sizes


class ArchNet(nn.Module):
    """Standardise a flat row, reshape it to the architecture's input, run the body.

    Attributes
    ----------
    mean, scale
        ``(d,)`` buffers over the flat row, as :class:`cmkd_doctor.training.mlp.Net` has.
    """

    def __init__(self, body: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.body = body
        self.shape = tuple(shape)
        self.input_shape = row_shape(self.shape)
        d = 1
        for size in self.shape:
            d *= size
        self.d_in = d
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.flatten(1) - self.mean) / self.scale  # no len(x): exports with any batch
        return self.body(x.unflatten(1, self.input_shape))

    def set_standardisation(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.scale.copy_(scale)


class StackedNetworks(nn.Module):
    """S :class:`ArchNet` members of one architecture as one module, with the member
    interface of :class:`cmkd_doctor.training.mlp.Stacked` (``n_members``, ``member_state``,
    ``set_members``, ``unstack``) so the training engine fits them alike.

    The members' parameters and buffers are stacked along a leading axis
    (``torch.func.stack_module_state``) and run by ``torch.func.functional_call`` over a
    copy of one body on the meta device, so each member keeps its own weights, gradient
    and running statistics: under ``torch.func.vmap`` on CUDA, one member after another
    on the CPU and for architectures with BatchNorm (see the module docstring).
    """

    def __init__(self, nets: Sequence[ArchNet]):
        super().__init__()
        first = nets[0]
        self.shape, self.input_shape = first.shape, first.input_shape
        params, buffers = torch.func.stack_module_state([n.body for n in nets])
        self.names = list(params)
        self.buffer_names = list(buffers)
        self.stacked = nn.ParameterList(nn.Parameter(params[k]) for k in self.names)
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"buffer_{i}", buffers[name])
        self.register_buffer("mean", torch.stack([n.mean for n in nets])[:, None, :])
        self.register_buffer("scale", torch.stack([n.scale for n in nets])[:, None, :])
        self.widest_row = max(activations(first))  # for the engine's evaluation steps
        # vmap cannot update running statistics (BatchNorm) held as batched buffers
        self.vmappable = not any(isinstance(m, nn.modules.batchnorm._NormBase)
                                 and m.track_running_stats for m in first.body.modules())
        self.vmap: bool | None = None  # None: vmap on CUDA when vmappable, else in turn
        base = copy.deepcopy(first.body).to("meta")
        object.__setattr__(self, "_base", base)  # not a submodule: its tensors are ours

    @property
    def n_members(self) -> int:
        return self.stacked[0].shape[0]

    def train(self, mode: bool = True) -> StackedNetworks:
        self._base.train(mode)
        return super().train(mode)

    def _buffers_now(self) -> list[torch.Tensor]:
        return [getattr(self, f"buffer_{i}") for i in range(len(self.buffer_names))]

    def forward(self, x: torch.Tensor, standardised: bool = False) -> torch.Tensor:
        """``x (S, b, d)``, or ``(b, d)`` shared by every member -> logits ``(S, b, K)``."""
        if x.dim() == 2:
            x = x.expand(self.n_members, *x.shape)
        if not standardised:
            x = (x - self.mean) / self.scale
        x = x.reshape(*x.shape[:2], *self.input_shape)
        params, buffers = list(self.stacked), self._buffers_now()

        def member(p: list[torch.Tensor], b: list[torch.Tensor], rows: torch.Tensor):
            state = {**dict(zip(self.names, p, strict=True)),
                     **dict(zip(self.buffer_names, b, strict=True))}
            return torch.func.functional_call(self._base, state, (rows,))

        vmap = (x.device.type == "cuda" and self.vmappable) if self.vmap is None else self.vmap
        if vmap and self.n_members > 1:
            return torch.func.vmap(member)(params, buffers, x)
        # on the CPU vmap's batched convolutions run about 1.3x slower than the members one
        # after another (BENCHMARKS.md, "Network students"): run them in turn
        return torch.stack([member([t[s] for t in params], [t[s] for t in buffers], x[s])
                            for s in range(self.n_members)])

    def _tensors(self) -> list[torch.Tensor]:
        return [*self.stacked, *self._buffers_now(), self.mean, self.scale]

    def member_state(self, s: int) -> list[torch.Tensor]:
        return [t[s].detach().clone() for t in self._tensors()]

    @torch.no_grad()
    def set_members(self, states: Sequence[list[torch.Tensor]]) -> None:
        """Make the members exactly ``states``; the parameters are new tensors."""
        n, m = len(self.names), len(self.buffer_names)
        stacked = [torch.stack([state[i] for state in states]) for i in range(n + m + 2)]
        self.stacked = nn.ParameterList(nn.Parameter(t) for t in stacked[:n])
        for i in range(m):
            setattr(self, f"buffer_{i}", stacked[n + i])
        self.mean, self.scale = stacked[n + m], stacked[n + m + 1]

    @torch.no_grad()
    def unstack(self, s: int) -> ArchNet:
        """Member ``s`` as a standalone :class:`ArchNet` in eval mode."""
        body = copy.deepcopy(self._base).to_empty(device=self.mean.device)
        state = {**{k: t[s] for k, t in zip(self.names, self.stacked, strict=True)},
                 **{k: t[s] for k, t in zip(self.buffer_names, self._buffers_now(),
                                            strict=True)}}
        body.load_state_dict(state)
        net = ArchNet(body, self.shape).to(self.mean.device)
        net.set_standardisation(self.mean[s, 0], self.scale[s, 0])
        return net.eval()
