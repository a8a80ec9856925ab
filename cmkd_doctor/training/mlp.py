"""The network family shared by ``rank``, teachers and students, alone or stacked.

``hidden=()`` is a linear (logistic-regression) model, as in the paper's Gaussian
experiments (Appendix B.2); ``hidden=(H,)`` is Linear(d, H) -> ReLU -> Linear(H, K);
longer tuples give deeper MLPs. Inputs are standardised inside the network with the
training set's mean and standard deviation, so saved networks take raw features.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from cmkd_doctor.errors import InputError
from cmkd_doctor.io.outputs import write_safetensors
from cmkd_doctor.validation import parse_hidden  # noqa: F401 - its old home

FORMAT = "cmkd-doctor/mlp-v1"


@dataclass(frozen=True)
class NetConfig:
    d_in: int
    hidden: tuple[int, ...]
    n_out: int
    multilabel: bool = False


class Net(nn.Module):
    """Standardise -> [Linear -> ReLU] * len(hidden) -> Linear.

    Attributes
    ----------
    mean, scale
        ``(d_in,)`` buffers: ``x`` enters the first layer as ``(x - mean) / scale``.
    """

    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = config
        widths = [config.d_in, *config.hidden, config.n_out]
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if i:  # in place: a Linear's backward needs its input, not its output
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(w_in, w_out))
        self.layers = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(config.d_in))
        self.register_buffer("scale", torch.ones(config.d_in))

    @property
    def first(self) -> nn.Linear:
        return self.layers[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean).div_(self.scale))  # one copy of x, not two

    def set_standardisation(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """``x`` enters the first layer as ``(x - mean) / scale`` (see
        :func:`standardisation`)."""
        self.mean.copy_(mean)
        self.scale.copy_(scale)


def standardisation(mean: torch.Tensor, std: torch.Tensor, constant: torch.Tensor,
                    enabled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(mean, scale)`` a network standardises its input with.

    Enabled (the default of every command): each channel's mean and standard deviation
    on the fit rows, so a network trains the same whatever the units of a channel. A
    channel that is constant on the fit rows carries nothing: its scale is infinite, so
    it enters as 0 whatever its value on other rows, and its first-layer weights act on
    nothing. Disabled (``--no-standardize``): raw features, mean 0 and scale 1.
    """
    if not enabled:
        return torch.zeros_like(mean), torch.ones_like(std)
    scale = torch.where(std > 0, std, torch.ones_like(std))
    return mean, torch.where(constant, torch.full_like(std, math.inf), scale)


def parameter_count(d_in: int, hidden: Sequence[int], n_out: int) -> int:
    """Weights and biases of a :class:`Net` of these widths."""
    widths = [d_in, *hidden, n_out]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=False))


def new_net(config: NetConfig, init_seed: int) -> Net:
    """A freshly initialised network, drawn from ``init_seed`` alone (the global RNG is
    left as it was), on the CPU with the identity standardisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return Net(config)


class Stacked(nn.Module):
    """S networks of one :class:`NetConfig` as one module.

    Each member keeps its own weights and standardisation (``mean``, ``scale`` of shape
    ``(S, 1, d)``), and its own gradient: batched matrix products keep the members
    independent, so a stacked fit gives the networks S separate fits would. Weights are
    stored input-major, ``(S, in, out)``, so their gradients come out contiguous and
    need no copy.

    Members can be dropped and restored (:meth:`member_state`, :meth:`set_members`),
    which the engine does when some stop early.
    """

    def __init__(self, nets: Sequence[Net]):
        super().__init__()
        self.config = nets[0].config
        linears = [[m for m in net.layers if isinstance(m, nn.Linear)] for net in nets]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([layers[i].weight.detach().T for layers in linears])
                         .contiguous())
            for i in range(len(linears[0])))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([layers[i].bias.detach() for layers in linears]))
            for i in range(len(linears[0])))
        self.register_buffer("mean", torch.stack([n.mean for n in nets])[:, None, :])
        self.register_buffer("scale", torch.stack([n.scale for n in nets])[:, None, :])

    @property
    def n_members(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor, standardised: bool = False) -> torch.Tensor:
        """``x (S, b, d)``, or ``(b, d)`` shared by every member -> logits ``(S, b, K)``.

        ``standardised``: ``x`` is already ``(x - mean) / scale`` (training standardises
        the rows once instead of once per member and step).
        """
        if x.dim() == 2:
            x = x.expand(self.n_members, *x.shape)
        h = x if standardised else (x - self.mean).div_(self.scale)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if i:
                h = h.relu_()  # in place: baddbmm's backward does not need its output
            h = torch.baddbmm(b[:, None, :], h, w)  # (S, b, out)
        return h

    def _tensors(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases, self.mean, self.scale]

    def member_state(self, s: int) -> list[torch.Tensor]:
        """Member ``s``'s weights and standardisation (copies)."""
        return [t[s].detach().clone() for t in self._tensors()]

    @torch.no_grad()
    def set_members(self, states: Sequence[list[torch.Tensor]]) -> None:
        """Make the members exactly ``states`` (any number of them), in that order.

        The parameters are new tensors: an optimiser must be given them again.
        """
        n = len(self.weights)
        stacked = [torch.stack([state[i] for state in states]) for i in range(2 * n + 2)]
        self.weights = nn.ParameterList(nn.Parameter(t) for t in stacked[:n])
        self.biases = nn.ParameterList(nn.Parameter(t) for t in stacked[n : 2 * n])
        self.mean, self.scale = stacked[2 * n], stacked[2 * n + 1]

    @torch.no_grad()
    def unstack(self, s: int) -> Net:
        """Member ``s`` as a standalone :class:`Net` in eval mode."""
        net = Net(self.config).to(self.mean.device)
        linears = [m for m in net.layers if isinstance(m, nn.Linear)]
        for layer, w, b in zip(linears, self.weights, self.biases, strict=True):
            layer.weight.copy_(w[s].T)
            layer.bias.copy_(b[s])
        net.mean.copy_(self.mean[s, 0])
        net.scale.copy_(self.scale[s, 0])
        return net.eval()


def save_net(net: Net, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a network as ``.safetensors`` with its config (and ``metadata``) inside."""
    meta = {"format": FORMAT, "config": json.dumps(asdict(net.config))}
    meta.update(metadata or {})
    return write_safetensors(path, dict(net.state_dict()), meta)


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a ``.safetensors`` file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{path}: cannot be read as .safetensors ({exc})") from exc


def config_from(meta: dict[str, str]) -> NetConfig:
    """The :class:`NetConfig` stored in a checkpoint's metadata."""
    raw = json.loads(meta["config"])
    return NetConfig(raw["d_in"], tuple(raw["hidden"]), raw["n_out"], raw["multilabel"])


def load_net(path: str | Path, device: str | torch.device = "cpu") -> tuple[Net, dict[str, str]]:
    """Rebuild a network saved by :func:`save_net`; returns it and the file's metadata."""
    state, meta = read_checkpoint(path, device)
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a cmkd-doctor network (metadata format is "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    net = Net(config_from(meta)).to(device)
    net.load_state_dict(state)
    return net, meta
