# SPDX-License-Identifier: Apache-2.0
"""Compiled artifacts: run, benchmark, export, load."""

from .artifact import Artifact, TensorInfo, load

__all__ = ["Artifact", "TensorInfo", "load"]
