"""DynST (Wu et al., KDD): dynamic sparse training over the sensors of spatio-temporal forecasting, on sparsecore."""
