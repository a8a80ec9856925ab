"""cmkd-doctor: diagnose crossmodal knowledge distillation with the Modality Focusing
Hypothesis (Xue et al., ICLR 2023).

The library API mirrors the CLI::

    from cmkd_doctor import load_paired, rank, RankOptions
    result = rank(load_paired("feats_a.npy", "feats_b.npy", "labels.npy"))
    result.salience  # (d_a,) modality-general decisive salience per channel
"""

__version__ = "0.1.0"

from cmkd_doctor.errors import CmkdError, InputError  # noqa: E402
from cmkd_doctor.inputs import PairedData, load_paired  # noqa: E402
from cmkd_doctor.ranking import RankOptions, RankResult, rank, rank_files  # noqa: E402
from cmkd_doctor.rundir import RunDir  # noqa: E402

__all__ = ["CmkdError", "InputError", "PairedData", "RankOptions", "RankResult", "RunDir",
           "__version__", "load_paired", "rank", "rank_files"]
