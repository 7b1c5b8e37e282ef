"""Sparse Model Soups (Zimmer et al., ICLR 2024), on sparsecore."""
