# SPDX-License-Identifier: Apache-2.0
"""Relax passes of tvm_qnn, one per module."""

from .canonicalize_fake_quant import CanonicalizeFakeQuant
from .legalize_quantize import LegalizeQuantize, quantize_half_even
from .rewrite_bitserial import KERNEL_ATTR, LayerMatch, RewriteBitserial, find_layers
from .schedule_kernels import ScheduleBitserial

__all__ = [
    "CanonicalizeFakeQuant",
    "KERNEL_ATTR",
    "LayerMatch",
    "LegalizeQuantize",
    "RewriteBitserial",
    "ScheduleBitserial",
    "find_layers",
    "quantize_half_even",
]
