"""Normalisation layers of OASIS: SPADE and the param-free (distributed) batch norm."""

from cat_models.oasis.norms.spade import (
    SPADE,
    DistributedBatchNorm2d,
    clone_module,
    param_free_norm,
    resize_like,
    sn,
)

__all__ = ["SPADE", "DistributedBatchNorm2d", "clone_module", "param_free_norm",
           "resize_like", "sn"]
