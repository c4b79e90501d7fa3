# SPDX-License-Identifier: Apache-2.0
"""tvm_qnn: quantized neural networks compiled to multi-branch bit-serial code with TVM.

The method: Sun et al., "Quantized Neural Networks via {-1,+1} Encoding Decomposition and
Acceleration" (arXiv 2106.09886). An M-bit × K-bit layer becomes M·K binary branches
(xor + popcount) recombined with scales 2^(i+j), bit-exact with the integer reference.
"""

from .compiler import compile, load  # noqa: A004 - the product's entry point is named compile
from .errors import TvmQnnError, UnsupportedModelError
from .runtime import Artifact
from .runtime.threads import reserve_pool
from .summary import summary
from .tuning import tune, tune_report

reserve_pool()  # before TVM starts its thread pool: artifacts may use every physical core

__version__ = "0.1.0"

__all__ = ["Artifact", "TvmQnnError", "UnsupportedModelError", "compile", "load", "summary",
           "tune", "tune_report"]
