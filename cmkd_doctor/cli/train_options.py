"""Training options shared by the commands that train teachers or students."""

from __future__ import annotations

from types import SimpleNamespace

import typer

from cmkd_doctor.classifiers import TrainOptions


def build(hidden: str | None, epochs: int | None, batch_size: int, lr: float, patience: int
          ) -> TrainOptions:
    """Checked options; ``hidden=None`` is resolved to the rank run's later."""
    return TrainOptions(hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr,
                        patience=patience).checked()


train_options = SimpleNamespace(
    epochs=typer.Option(None, help="Most training epochs [default: about 4000 optimiser "
                        "steps]."),
    batch_size=typer.Option(256, help="Minibatch size."),
    lr=typer.Option(1e-3, help="Adam learning rate."),
    patience=typer.Option(10, help="Early stopping on a validation tenth of the training "
                          "rows, keeping the best epoch; 0 trains all epochs."),
    build=build,
)
