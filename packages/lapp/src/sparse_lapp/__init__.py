"""LAPP (Zhai et al. 2023): layer-adaptive progressive pruning of CNNs from scratch, on sparsecore."""
