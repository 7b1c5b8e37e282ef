"""Lottery tickets: iterative magnitude pruning with rewinding and instability analysis, on sparsecore."""
