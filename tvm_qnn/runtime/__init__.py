# SPDX-License-Identifier: Apache-2.0
"""Compiled artifacts: run, benchmark, export; RPC devices; timing."""

from .artifact import Artifact, TensorInfo, read_sidecar

__all__ = ["Artifact", "TensorInfo", "read_sidecar"]
