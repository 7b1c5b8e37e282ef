"""GraNet (Liu et al., NeurIPS 2021): gradual pruning with zero-cost neuroregeneration, on sparsecore."""
