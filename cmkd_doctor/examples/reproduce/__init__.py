"""The paper's experiments, reproduced: one registry for every family, one entry point.

Each family lives in its own module: the synthetic Gaussian experiments of Sec. 5.2
(Table 2, Fig. 2, Fig. 3; :mod:`cmkd_doctor.examples.reproduce.gaussian`) and the AV-MNIST case
study of Sec. 3 (Table 1 / Table 5; :mod:`cmkd_doctor.examples.reproduce.avmnist`).
:func:`reproductions` names each experiment with its default seed (declared once, here
or in its family's module, and read by the CLI), and :func:`reproduce` runs one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmkd_doctor.errors import InputError, unknown_name
from cmkd_doctor.progress import Progress, no_progress


@dataclass(frozen=True)
class Reproducible:
    """One experiment of the paper: its family, title and default seed, and whether it
    needs the folder of a built example (``--data``)."""

    name: str
    family: str  # gaussian, avmnist or avmnist-networks
    title: str
    default_seed: int
    needs_data: bool = False
    default_runs: int = 10  # the paper's


def _registry() -> dict[str, Reproducible]:
    from cmkd_doctor.examples.reproduce import avmnist_networks as networks
    from cmkd_doctor.examples.reproduce.avmnist import DEFAULT_SEED
    from cmkd_doctor.examples.reproduce.gaussian import EXPERIMENTS

    found = {name: Reproducible(name, "gaussian", EXPERIMENTS[name].title,
                                EXPERIMENTS[name].default_seed) for name in EXPERIMENTS}
    found["table1-avmnist"] = Reproducible(
        "table1-avmnist", "avmnist", "Table 1: unimodal vs crossmodal teacher on AV-MNIST",
        DEFAULT_SEED, needs_data=True)
    found["avmnist-networks"] = Reproducible(
        "avmnist-networks", "avmnist-networks", "AV-MNIST end to end with networks: "
        "LeNet-5 image teacher masked inside, 3-layer CNN audio students",
        networks.DEFAULT_SEED, needs_data=True, default_runs=networks.DEFAULT_RUNS)
    return found


@functools.cache
def reproductions() -> dict[str, Reproducible]:
    """Every experiment :func:`reproduce` runs, by name (built on first use: the
    families' modules import torch)."""
    return _registry()


def reproduce(name: str, runs: int | None = None, seed: int | None = None,
              device: Any = "auto", data: str | Path | None = None,
              protocol: str = "official", official_swap: bool = False,
              out: str | Path | None = None, progress: Progress = no_progress) -> Any:
    """Run experiment ``name`` (:func:`reproductions`) over ``runs`` seeds from ``seed``
    (``None``: its defaults). Returns a :class:`~cmkd_doctor.examples.reproduce.gaussian.
    Reproduction` for the Gaussian family, the ``reproduction`` document for AV-MNIST.
    ``out`` keeps the files avmnist-networks makes (its networks, features and runs)."""
    from cmkd_doctor.devices import resolve_device

    found = reproductions()
    if name not in found:
        raise unknown_name("examples reproduce EXPERIMENT", found, name)
    experiment = found[name]
    seed = experiment.default_seed if seed is None else seed
    runs = experiment.default_runs if runs is None else runs
    device = resolve_device(device)
    if out is not None and experiment.family != "avmnist-networks":
        raise InputError(f"--out keeps the files of avmnist-networks; {name} writes none")
    if experiment.needs_data:  # the AV-MNIST families
        if protocol != "official" or official_swap:
            raise InputError(f"{name}: --protocol and --official-swap are for the Gaussian "
                             "experiments (table2, fig2, fig3)")
        if experiment.family == "avmnist-networks":
            from cmkd_doctor.examples.reproduce.avmnist_networks import reproduce_avmnist_networks

            return reproduce_avmnist_networks(data, runs=runs, seed=seed, device=device,
                                              out=out, progress=progress)
        from cmkd_doctor.examples.reproduce.avmnist import reproduce_avmnist

        return reproduce_avmnist(data, runs=runs, seed=seed, device=device,
                                 progress=progress)
    if data is not None:
        raise InputError(f"--data is for table1-avmnist and avmnist-networks; {name} "
                         "generates its data")
    from cmkd_doctor.examples.reproduce.gaussian import reproduce_gaussian

    return reproduce_gaussian(name, runs=runs, seed=seed, device=device, protocol=protocol,
                              official_swap=official_swap, progress=progress)


def save_plot(result: Any, path: str | Path) -> Path:
    """A Gaussian experiment's series beside the paper's figures, as a PNG file (needs
    matplotlib)."""
    from cmkd_doctor.examples.reproduce.gaussian import PAPER_SOURCE
    from cmkd_doctor.io.outputs import write_bytes
    from cmkd_doctor.report.plots import plot_reproduction

    return write_bytes(path, plot_reproduction(result.rows, result.experiment.name,
                                               result.experiment.title, PAPER_SOURCE))

