"""Training networks: the one engine (``engine``), the MLP family (``mlp``), many
classifiers trained as one stack (``stacked``), students on raw inputs
(``student_networks``), losses (``losses``, Eq. 1 and Eq. 28), metrics (``metrics``) and
training curves (``curves``).
"""
