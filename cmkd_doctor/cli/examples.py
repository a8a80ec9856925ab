"""``cmkd-doctor examples``: the paper's datasets as built-in examples."""

from __future__ import annotations

from pathlib import Path

import typer

from cmkd_doctor.cli._common import out, show_help_without_command
from cmkd_doctor.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.outputs import check_out_dir

app = typer.Typer(help="The paper's datasets as built-in examples.")
make_app = typer.Typer(help="Generate or build an example dataset.")
app.add_typer(make_app, name="make")
app.callback(invoke_without_command=True)(show_help_without_command)
make_app.callback(invoke_without_command=True)(show_help_without_command)

_D = GaussianSpec()


@make_app.command("gaussian")
def gaussian(
    d1: int = typer.Option(_D.d1, help="Channels of modality a."),
    d2: int = typer.Option(_D.d2, help="Channels of modality b."),
    d: int = typer.Option(_D.d, help="Dimension of the decisive vector x* (all of it sets y)."),
    j1: int = typer.Option(_D.j1, help="|J1|: decisive features copied into modality a."),
    j2: int = typer.Option(_D.j2, help="|J2|: decisive features copied into modality b."),
    shared: int = typer.Option(_D.shared, help="|J1 & J2|: the modality-general ones."),
    n_train: int = typer.Option(_D.n_train, help="Training rows."),
    n_test: int = typer.Option(_D.n_test, help="Held-out test rows."),
    seed: int = typer.Option(_D.seed, help="Seed of everything drawn."),
    out_dir: Path = typer.Option(Path("gaussian"), "--out", "-o", help="Folder to write."),
) -> None:
    """Synthetic multimodal Gaussian data (Appendix B.2, Eq. 27) with its truth.json."""
    spec = GaussianSpec(d1=d1, d2=d2, d=d, j1=j1, j2=j2, shared=shared, n_train=n_train,
                        n_test=n_test, seed=seed)
    check_out_dir(out_dir)
    data = make_gaussian(spec)
    write_gaussian(data, out_dir)
    t = data.truth
    out.print(f"wrote {out_dir}/: feats_a.npy {data.xa.shape}, feats_b.npy {data.xb.shape}, "
              f"labels.npy, the *_test.npy set and truth.json", markup=False)
    out.print(f"alpha {t['alpha']:.2f}, beta {t['beta']:.2f}, gamma {t['gamma']:.2f};  "
              f"modality-general channels of a: {t['channels_a']['general']}", markup=False)
