"""SHRP: specialized head routing and pruning for encoder compression, on sparsecore."""
