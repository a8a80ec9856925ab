"""The docs' quoted figures against fresh runs (python tools/docs.py): the
blocks' machinery on made-up figures, and each block rerun wherever its data is."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import docs  # noqa: E402  (tools/docs.py: the docs' figures, a tool beside the package)


def test_a_block_is_rewritten_from_figures_and_read_back():
    figures = {"avmnist/f1/acc": 91.25, "avmnist/f2/acc": 88.5, "avmnist/alignment": 0.3,
               "avmnist/negative/pixels": 500, "avmnist/decisive/count": 16,
               "avmnist/overlap": 0.1, "avmnist/half/overlap": 0.5, "avmnist/gamma": 0.0,
               "avmnist/headline": "Skip KD.", "table1/cm_kd/teacher/acc": 93.0,
               "table1/um_kd/teacher/acc": 90.0, "table1/no_kd/acc": 89.0,
               **{f"table1/cm_minus_um/{rho}/{part}": value for rho in ("rho_0", "rho_0.5")
                  for part, value in (("gap", -1.5), ("se", 0.4), ("holds", True))}}
    text = "before\n<!-- docs:avmnist old -->\nstale 535\n<!-- /docs:avmnist -->\nafter\n"
    written = docs.rewrite(text, "avmnist", figures)
    assert written.startswith("before\n") and written.endswith("after\n")
    assert "stale" not in written and "500 of 784 pixels" in written
    assert docs.quoted(written, "avmnist") == figures
    assert docs.rewrite(written, "avmnist", figures) == written  # stable
    with pytest.raises(ValueError):
        docs.rewrite("no block here", "avmnist", figures)


def test_drift_names_states_that_changed_and_numbers_beyond_their_tolerance():
    said = {"x/general/acc": 77.0, "x/ordering": "holds", "x/gamma": 0.5,
            "x/headline": "Use the general r=0.5 teacher: +1.50 points."}
    same = {**said, "x/general/acc": 77.9, "x/gamma": 0.53,
            "x/headline": "Use the general r=0.5 teacher: +1.20 points."}
    assert docs.drift(said, same) == []
    moved = {**said, "x/general/acc": 79.0, "x/ordering": "undetermined", "x/gamma": 0.6,
             "x/headline": "Keep the regular teacher."}
    found = docs.drift(said, moved)
    assert len(found) == 4 and any("x/ordering" in line for line in found)
    assert docs.drift(said, {}) and len(docs.drift(said, {})) == 4


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name", sorted(docs.BLOCKS))
def test_the_readme_quotes_what_a_fresh_run_gives(name):
    """Every figure of the block, rerun now (skipped where the data is not here)."""
    root = docs.data_root()
    block = docs.BLOCKS[name]
    if root is None or not all((root / need).exists() for need in block.needs):
        pytest.skip(f"needs {', '.join(block.needs)} under a data root (../shared/data)")
    quoted = docs.quoted((ROOT / block.page).read_text(), name)
    assert quoted, f"{block.page}'s docs:{name} block holds no figures: run python " \
                   f"tools/docs.py {name} --write"
    assert docs.drift(quoted, docs.run_block(name, root)) == []


def test_drift_reads_a_best_row_only_where_the_verdict_finds_one_and_wide_counts_widely():
    """Where no row clearly beats No-KD which one scored highest is noise, so it is not
    compared; the decisive pixels' count moves by up to a factor of two between kernel
    paths, a teacher's accuracy by up to 3 points (one network), other figures less."""
    noise = {"x/best": "specific r=0.5", "x/decision": "check_order"}
    assert docs.drift(noise, {**noise, "x/best": "random r=0.5"}) == []
    chosen = {"x/best": "general r=0.5", "x/decision": "use_teacher"}
    assert len(docs.drift(chosen, {**chosen, "x/best": "random r=0.5"})) == 1
    figures = {"x/decisive/count": 8, "t/um_kd/teacher/acc": 90.9, "x/general/acc": 88.0}
    assert docs.drift(figures, {"x/decisive/count": 15, "t/um_kd/teacher/acc": 88.1,
                                "x/general/acc": 88.5}) == []
    assert len(docs.drift(figures, {"x/decisive/count": 17, "t/um_kd/teacher/acc": 87.8,
                                    "x/general/acc": 86.4})) == 3
