# SPDX-License-Identifier: Apache-2.0
"""A speed model of ARM code for boards we do not have: LLVM's machine-code analyzer.

``llvm-mca-19 -mcpu=<core>`` runs a loop body through LLVM's scheduling model of the core and
reports cycles per iteration. :func:`kernel_seconds` cuts the innermost loop with the most
vector ``cnt`` (the xor-popcount loop) out of a compiled kernel and scales it by the
popcounts the layer needs. Packing and the epilogue are outside that loop and not modelled:
it estimates the branch computation, the part the tuned schedule parameters change most. The
cortex-a76 is modelled with LLVM's Neoverse-N1 model (the same core; LLVM 19 has no A76 model).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

from ...errors import TvmQnnError

MCA_CPU = {"cortex-a76": "neoverse-n1"}
CNT = re.compile(r"\bcnt\s+v\d+\.(16|8)b")


@functools.lru_cache(maxsize=1)
def llvm_mca() -> str:
    """Path of llvm-mca (Debian's llvm-19 names it llvm-mca-19)."""
    tool = shutil.which("llvm-mca-19") or shutil.which("llvm-mca")
    if tool is None:
        raise TvmQnnError("llvm-mca not found: install llvm-19 (`make sysdeps` does)")
    return tool


def mca_cycles(asm: str, mcpu: str, resources_only: bool = False,
               triple: str = "aarch64-linux-gnu") -> float:
    """Cycles per iteration of the loop body ``asm`` on ``mcpu`` according to llvm-mca.

    ``resources_only``: the block reciprocal throughput instead (the issue bound of the
    instructions with every dependency ignored).
    """
    out = subprocess.run([llvm_mca(), f"-mtriple={triple}", f"-mcpu={MCA_CPU.get(mcpu, mcpu)}",
                          "-iterations=200"], input=asm, capture_output=True, text=True,
                         check=True).stdout
    if resources_only:
        return float(re.search(r"Block RThroughput:\s+([\d.]+)", out).group(1))
    return int(re.search(r"Total Cycles:\s+(\d+)", out).group(1)) / 200


def hot_loop(asm: str, pattern: re.Pattern | str = CNT) -> str:
    """The innermost loop of ``asm`` with the most ``pattern``: label to back-edge,
    instructions only (no labels or directives)."""
    loops = []
    for label in re.finditer(r"^(\.LBB\d+_\d+):", asm, re.M):
        back = re.search(rf"^\s+b(?:\.\w+)?\s+{re.escape(label.group(1))}\s*$",
                         asm[label.end():], re.M)
        body = asm[label.end():label.end() + back.end()] if back else ""
        if body and not re.search(r"^\.LBB\d+_\d+:", body, re.M):  # innermost only
            loops.append(body)
    if not loops:
        raise TvmQnnError("no loop found in the generated code")
    body = max(loops, key=lambda b: len(re.findall(pattern, b)))
    return "\n".join(line for line in body.splitlines()
                     if line.startswith("\t") and not line.lstrip().startswith("."))


def kernel_seconds(asm: str, popcount_bytes: int, mcpu: str, clock_ghz: float) -> float:
    """Modelled seconds of a bit-serial kernel that popcounts ``popcount_bytes`` bytes.

    The xor-popcount loop's cycles per iteration over the bytes its ``cnt`` count, times the
    bytes the layer needs, at ``clock_ghz``.
    """
    loop = hot_loop(asm)
    per_iter = sum(16 if m.group(1) == "16" else 8 for m in CNT.finditer(loop))
    if per_iter == 0:
        raise TvmQnnError("the kernel has no vector cnt loop to model")
    return popcount_bytes / per_iter * mca_cycles(loop, mcpu) / (clock_ghz * 1e9)
