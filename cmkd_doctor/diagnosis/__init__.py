"""Students and what they say: distillation from every teacher (``distill``), the
Table-4-shaped comparison (``comparison``), the verdict (``verdict``), student seeds added
where the verdict needs them (``seed_schedule``), what to try next (``advice``) and the
whole doctor in one call (``diagnose``).
"""
