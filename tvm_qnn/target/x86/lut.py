# SPDX-License-Identifier: Apache-2.0
"""The lookup step of the table-lookup kernel on x86: one ``vpshufb``.

The kernel (:mod:`tvm_qnn.topi.lut_conv`) leaves innermost, for each table, the loops over
32 output channels and the 16 table entries: ``c[i] += t[v] if w[i] == v``, i.e. ``c[i] +=
t[w[i]]``. ``vpshufb`` does that for 32 byte lanes at once, given the 16-byte table in both
128-bit lanes and indices below 16. Registered as a TensorIntrin, like the int8-dot steps.
"""

from __future__ import annotations

import functools

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ...topi.attrs import CHUNK_BLOCK, LUT_ATTR
from ...topi.lut_conv import LUT_LANES, NIBBLE_VALUES

#: The cost model's rule on CPUs without VPOPCNTDQ: convs with weights of at most
#: ``LUT_MAX_WEIGHT_BITS`` bits and at most ``LUT_MAX_BRANCHES`` branches (M·K) get the
#: table-lookup kernel where they fit it. Measured with ``python -m bench.kernel_families
#: --mcpu haswell`` on one Zen 4 core (suite convs conv56..conv7, ms, lookups / popcounts /
#: int8-dot): W1A2 0.26-0.38 / 0.62-0.68 / 0.86-0.94; W2A2 0.46-0.66 / 1.23-1.36 /
#: 0.85-0.93; W1A4 0.44-0.60 / 1.22-1.36 / 0.85-0.95; W2A3 0.62-0.87 / 1.84-2.12 /
#: 0.86-1.32; but W2A4 0.97-1.17 against int8-dot 0.89-0.96 and W3A3 0.97-1.15 against
#: 0.88-1.02. W1A1: 0.21-0.24 against popcounts 0.30-0.39 on conv28..conv7, 0.40 against 0.34
#: on conv56 (its 58² x 64-channel tables, 0.9 MB, leave the L2 cache).
LUT_MAX_WEIGHT_BITS = 2
LUT_MAX_BRANCHES = 6


def _desc():
    @T.prim_func(s_tir=True)
    def desc(w: T.Buffer((LUT_LANES,), "uint8", offset_factor=1),
             t: T.Buffer((NIBBLE_VALUES,), "uint8", offset_factor=1),
             c: T.Buffer((LUT_LANES,), "uint8", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            # In the order the kernel's block reads them: the matching compares the lists.
            T.reads(c[0:LUT_LANES], w[0:LUT_LANES], t[0:NIBBLE_VALUES])
            T.writes(c[0:LUT_LANES])
            for i, v in T.grid(LUT_LANES, NIBBLE_VALUES):
                with T.sblock("update"):
                    vi, vv = T.axis.remap("SR", [i, v])
                    c[vi] = c[vi] + T.if_then_else(w[vi] == T.Cast("uint8", vv), t[vv],
                                                   T.uint8(0))

    return desc


def _impl():
    @T.prim_func(s_tir=True)
    def impl(w: T.Buffer((LUT_LANES,), "uint8", offset_factor=1),
             t: T.Buffer((NIBBLE_VALUES,), "uint8", offset_factor=1),
             c: T.Buffer((LUT_LANES,), "uint8", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:LUT_LANES], w[0:LUT_LANES], t[0:NIBBLE_VALUES])
            T.writes(c[0:LUT_LANES])
            table = t.vload([0], "uint8x16")
            both = T.Shuffle([table, table], list(range(NIBBLE_VALUES)) * 2)
            c[T.ramp(T.int32(0), 1, LUT_LANES)] = c[T.ramp(T.int32(0), 1, LUT_LANES)] + \
                T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pshuf.b"),
                                        both, w.vload([0], "uint8x32"), dtype="uint8x32")

    return impl


@functools.lru_cache(maxsize=None)
def lookup_step() -> str:
    """The TensorIntrin of one lookup step, registered on first use."""
    name = "tvm_qnn.x86.lut_avx2"
    TensorIntrin.register(name, _desc(), _impl(), override=True)
    return name


def tensorize_lookups(sch) -> None:
    """Replace the (output channels × entries) loops the CPU template leaves innermost in a
    table-lookup kernel by the lookup step (no-op for other kernels)."""
    try:
        block = sch.get_sblock(f"{CHUNK_BLOCK}_update")
    except Exception:  # noqa: BLE001 - TVM raises a generic error for a missing block
        return
    if sch.get(block).annotations.get(LUT_ATTR):
        sch.tensorize(sch.get_loops(block)[-2], lookup_step())


__all__ = ["LUT_MAX_BRANCHES", "LUT_MAX_WEIGHT_BITS", "lookup_step", "tensorize_lookups"]
