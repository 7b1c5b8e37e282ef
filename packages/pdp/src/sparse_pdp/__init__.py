"""PDP (Cho et al., NeurIPS 2023): parameter-free differentiable pruning, on sparsecore."""
