# SPDX-License-Identifier: Apache-2.0
"""A layer kernel's time, split into its stages: the input pack, the branch kernel and the
epilogue.

The stages of a layer kernel are fused into one function (the epilogue inside the register
tile of the branch sums), so they cannot be timed as separate calls. Instead the kernel is
compiled twice more with stages taken out, and timed on the arguments of the real call:

* without its input stages (the bit-plane pack, the integer or byte staging of the input,
  the window popcounts): ``pack = whole - that``;
* without its input stages and the accumulation of the branch sums (their init stays):
  ``epilogue = that`` (the epilogue and the loops around it);
* ``kernel = whole - pack - epilogue``, so the three add up to the whole.

A stage is taken out by replacing its block with a no-op in the scheduled function's
TVMScript, which is parsed back: the schedule, tiles and tensorized instructions of what is
left stay as they were. The buffers the removed stages wrote become parameters (zeros): left
unwritten, LLVM could treat their reads as undefined and drop the work that reads them.
Differences of timings on a noisy machine can come out slightly negative; they are clamped
at 0.
"""

from __future__ import annotations

import re

import tvm

from ..topi.attrs import (
    BRANCH_BLOCK,
    CHUNK_BLOCK,
    DOT8_INPUT_BLOCK,
    INT_INPUT_BLOCK,
    LUT_TABLE_BLOCK,
    PACK_BLOCK,
    ROWSUM_BLOCK,
)
from .timing import evaluator_seconds

#: Blocks that prepare a kernel's input (name prefixes): the table-lookup kernel's tables too.
INPUT_STAGES = (PACK_BLOCK, INT_INPUT_BLOCK, DOT8_INPUT_BLOCK, ROWSUM_BLOCK, LUT_TABLE_BLOCK)
#: Blocks that accumulate the branch sums (the update, not the init; tensorized updates keep
#: the prefix).
ACCUMULATION = (f"{BRANCH_BLOCK}_update", CHUNK_BLOCK)

_BLOCK_LINE = re.compile(r'(\s*)with T\.sblock\("([^"]+)"\):')
_WRITES = re.compile(r'\s*T\.writes\((\w+)\[')
_ALLOC = re.compile(r'\s*(\w+) = T\.sblock_alloc_buffer\(\((.*?)\), "(\w+)"')


def without_blocks(func: tvm.tirx.PrimFunc, prefixes: tuple[str, ...]
                   ) -> tuple[tvm.tirx.PrimFunc, list[tuple[tuple[int, ...], str]]]:
    """``func`` with every block whose name starts with one of ``prefixes`` replaced by a
    no-op (its loops stay, empty: the compiler drops them), and the (shape, dtype) of the
    buffers those blocks wrote.

    Those buffers become parameters, after the others: left as allocations nobody writes,
    LLVM may fold their reads as undefined and drop the work that reads them.
    """
    kept, cut_at, written = [], None, []
    for line in func.script().splitlines():
        indent = len(line) - len(line.lstrip())
        if cut_at is not None:
            if not line.strip() or indent > cut_at:
                match = _WRITES.match(line)
                if match and match.group(1) not in written:
                    written.append(match.group(1))
                continue  # inside the block taken out
            cut_at = None
        match = _BLOCK_LINE.match(line)
        if match and match.group(2).startswith(prefixes):
            kept.append(f"{match.group(1)}T.evaluate(0)")
            cut_at = indent
            continue
        kept.append(line)
    params, extra = [], []
    for line in list(kept):
        match = _ALLOC.match(line)
        if match and match.group(1) in written:
            kept.remove(line)
            params.append(f"{match.group(1)}: T.Buffer(({match.group(2)}), \"{match.group(3)}\")")
            shape = tuple(int(d) for d in re.findall(r"\d+", re.sub(r"T\.int64", "",
                                                                      match.group(2))))
            extra.append((shape, match.group(3)))
    if params:
        at = next(k for k, line in enumerate(kept) if line.startswith("def "))
        head, _, tail = kept[at].rpartition("):")
        kept[at] = f"{head}, {', '.join(params)}):{tail}"
    return tvm.script.from_source("\n".join(kept)), extra


def has_blocks(func: tvm.tirx.PrimFunc, prefixes: tuple[str, ...]) -> bool:
    """Whether ``func`` has a block whose name starts with one of ``prefixes``."""
    return any(m.group(2).startswith(prefixes) for m in _BLOCK_LINE.finditer(func.script()))


def split_kernel(func: tvm.tirx.PrimFunc, symbol: str, target, device, args, whole_ms: float,
                 number: int = 20, repeat: int = 5) -> dict:
    """``pack_ms``, ``kernel_ms`` and ``epilogue_ms`` of the layer kernel ``func`` (the
    scheduled PrimFunc the model calls as ``symbol``), which took ``whole_ms`` on ``args``.

    Each variant is compiled for the TVM ``target`` and timed on ``device`` with ``args``
    (plus zeros for the buffers of the stages taken out), as the whole was timed.
    """
    import numpy as np

    def timed(variant) -> float:
        variant, extra = variant
        lib = tvm.compile(variant.with_attr("global_symbol", symbol), target)
        buffers = [tvm.runtime.tensor(np.zeros(shape, dtype), device) for shape, dtype in extra]
        return 1e3 * evaluator_seconds(getattr(lib, "mod", lib), symbol, device, *args,
                                       *buffers, number=number, repeat=repeat)

    pack = 0.0
    if has_blocks(func, INPUT_STAGES):
        pack = max(0.0, whole_ms - timed(without_blocks(func, INPUT_STAGES)))
    epilogue = min(timed(without_blocks(func, INPUT_STAGES + ACCUMULATION)), whole_ms - pack)
    return {"pack_ms": pack, "kernel_ms": max(0.0, whole_ms - pack - epilogue),
            "epilogue_ms": max(0.0, epilogue)}


__all__ = ["ACCUMULATION", "INPUT_STAGES", "has_blocks", "split_kernel", "without_blocks"]
