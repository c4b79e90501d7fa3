# SPDX-License-Identifier: Apache-2.0
"""The argument types of ``tvm-qnn``: each parses and checks one kind of argument.

Given as ``type=`` to argparse, they turn a bad value into a usage error (exit code 2) that
names the value and what is accepted, before any work starts. The rules themselves stay
where the values are used (``LAYER_SUITE``, ``topi.layer.MAX_BITS``, ``parse_precision``,
the library path checks of ``runtime.sidecar``); these only call them.
"""

from __future__ import annotations

import argparse
import json
import os
import re

from .errors import TvmQnnError


def target_spec(text: str) -> str | dict:
    """``--target``: an alias such as ``x86`` or ``accel:cfg.json``, or a TVM target as JSON
    (``{"kind": "llvm", "mcpu": "haswell"}``)."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        spec = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON ({err}); give an alias "
                                         "(x86, arm_cpu, accel) or a target JSON object"
                                         ) from None
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError(f"{text!r}: a target JSON must be an object")
    return spec


def shape_spec(text: str) -> tuple[str, tuple[int, ...]]:
    """``--shape NAME=D0,D1,...``: an input's name and its static dimensions (each >= 1)."""
    name, _, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not name or not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=D0,D1,... with dimensions "
                                         ">= 1, e.g. image=1,3,32,32")
    return name, shape


def bits_spec(text: str) -> tuple[int, int]:
    """``--bits WxA``: weight and activation bits, each 1..MAX_BITS (``2x2``)."""
    from .topi.layer import MAX_BITS

    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or not all(1 <= int(b) <= MAX_BITS for b in m.groups()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected WEIGHTxACTIVATION bits, each "
                                         f"1..{MAX_BITS}, e.g. 1x1 2x2 1x2")
    return int(m.group(1)), int(m.group(2))


def precision_spec(text: str) -> str:
    """``--precision``: ``fp32`` or ``wKaM`` (checked by ``nn.models.parse_precision``)."""
    from .nn.models import parse_precision

    try:
        parse_precision(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def existing_file(text: str) -> str:
    """A file that must exist (``--init-from``, ``--config``)."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    return text


def output_library(text: str) -> str:
    """``-o``: where a library can be written and loaded back from (``.so`` in an existing
    folder)."""
    from .runtime.sidecar import check_library_path

    try:
        check_library_path(text, writing=True)
    except TvmQnnError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def work_dir(text: str) -> str:
    """``--work-dir``: a directory, or a path where one can be made."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a file; the tuning work dir is a "
                                         "directory (made when missing)")
    return text


__all__ = ["bits_spec", "existing_file", "output_library", "precision_spec", "shape_spec",
           "target_spec", "work_dir"]
