"""HollowNeRF (Xie et al., ICCV 2023): pruning hash-grid NeRFs with a trainable saliency mask, on sparsecore."""
