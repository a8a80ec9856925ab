"""The network family shared by ``rank``, teachers and students.

``hidden=()`` is a linear (logistic-regression) model, as in the paper's Gaussian
experiments (Appendix B.2); ``hidden=(H,)`` is Linear(d, H) -> ReLU -> Linear(H, K);
longer tuples give deeper MLPs. Inputs are standardised inside the network with the
training set's mean and standard deviation, so saved networks take raw features.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from cmkd_doctor.errors import InputError, option_error
from cmkd_doctor.outputs import write_safetensors

FORMAT = "cmkd-doctor/mlp-v1"


def parse_hidden(text: str | int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``"0"`` -> ``()``; ``"256"`` -> ``(256,)``; ``"512,256"`` -> ``(512, 256)``."""
    if isinstance(text, int):
        sizes = [text]
    elif isinstance(text, (tuple, list)):
        sizes = list(text)
    else:
        try:
            sizes = [int(part) for part in str(text).split(",") if part.strip()]
        except ValueError:
            raise option_error("hidden", "0 or a comma list of positive layer widths",
                               text) from None
    if sizes in ([0], []) and not isinstance(text, str):
        return ()
    if sizes == [0]:
        return ()
    if not sizes or any(s <= 0 for s in sizes):
        raise option_error("hidden", "0 or a comma list of positive layer widths", text)
    return tuple(sizes)


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
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(w_in, w_out))
        self.layers = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(config.d_in))
        self.register_buffer("scale", torch.ones(config.d_in))

    @property
    def first(self) -> nn.Linear:
        return self.layers[0]

    def tail(self, pre: torch.Tensor) -> torch.Tensor:
        """Everything after the first linear layer: pre-activation -> logits."""
        for layer in list(self.layers)[1:]:
            pre = layer(pre)
        return pre

    def folded_first(self) -> tuple[torch.Tensor, torch.Tensor]:
        """First-layer weight and bias acting on raw features (standardisation folded in).

        Returns ``w (H, d)``, ``b (H,)`` with ``first(standardise(x)) == x @ w.T + b``.
        """
        w = self.first.weight / self.scale  # (H, d)
        b = self.first.bias - w @ self.mean  # (H,)
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) / self.scale)

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        # A constant channel gets scale 1, so it stays constant rather than dividing by 0.
        self.scale.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))


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
