"""Algorithm 1 of the paper (App. B.4): its maths (``algorithm1``), its options and
protocols (``options``), the run on paired data (``run``), the fused permutation kernel
(``kernels``), correlated channel groups (``groups``), the gamma estimate (``gamma``, Sec. 4)
and the checks on a ranking (``checks``) with what they found (``findings``).
"""
