"""TRP (Xu et al., IJCAI 2020): trained rank pruning, on sparsecore."""
