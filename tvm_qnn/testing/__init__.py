# SPDX-License-Identifier: Apache-2.0
"""Helpers for tests, tutorials and benchmarks: model builders, reference runners, layers."""
