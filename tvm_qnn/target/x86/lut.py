# SPDX-License-Identifier: Apache-2.0
"""The lookup step of the table-lookup kernel on x86: one ``vpshufb``.

The kernel (:mod:`tvm_qnn.topi.lut_conv`) leaves innermost, for each table, the loops over
32 output channels and the 16 table entries: ``c[i] += t[v] if w[i] == v``, i.e. ``c[i] +=
t[w[i]]``. ``vpshufb`` does that for 32 byte lanes at once, given the 16-byte table in both
128-bit lanes and indices below 16. Registered as a TensorIntrin, like the int8-dot steps.

With paired weight nibbles (:func:`~tvm_qnn.topi.lut_conv.lut_pairs`) the step covers 64
channels: the 32 weight bytes' low nibbles index the table for the first 32, their high
nibbles (a shift; LLVM masks it, x86 has no byte shift) for the next 32, the table loaded once.
"""

from __future__ import annotations

import functools

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ...topi.attrs import CHUNK_BLOCK, LUT_ATTR
from ...topi.lut_conv import LUT_LANES, NIBBLE_VALUES
from ..cpu.schedule import TILE_SCOPE

#: The cost model's rule on CPUs without VPOPCNTDQ: convs with weights of at most
#: ``LUT_MAX_WEIGHT_BITS`` bits and at most :func:`lut_max_branches` branches (M·K) get the
#: table-lookup kernel where they fit it. Measured with ``python -m bench.kernel_families
#: --mcpu haswell skylake-avx512 cascadelake`` on one Zen 4 core (suite convs conv56..conv7,
#: ms, lookups / popcounts / int8-dot; ``bench/results/x86_kernel_families_lut_znver4.json``):
#:
#: * haswell (AVX2): W1A1 0.21-0.35 / 0.31-0.46; W1A2 0.24-0.52 / 0.63-0.69 / 0.86-1.33; W2A2
#:   0.47-0.78 / 1.24-1.69 / 0.85-1.34 (conv56 1.18 against 1.04 in that noisy run, 0.66
#:   against 0.93 in the one before); W1A4 0.44-0.56 / 1.23-1.89 / 0.87-1.22; W2A3
#:   0.63-0.84 / - / 0.90-1.05 (conv7 1.43 / 1.31); W2A4 0.92-1.52 against int8-dot 0.89-0.96.
#: * skylake-avx512 (zmm popcounts, vpmaddubsw zmm): W1A1 0.20-0.36 / 0.30-0.46; W2A2
#:   0.44-0.71 / - / 0.73-0.82; W1A4 0.37-0.48 / - / 0.74-0.84; W2A3 0.64-0.81 / - /
#:   0.72-0.82; W2A4 0.84-1.07 against 0.72-0.86.
#: * cascadelake (VNNI vpdpbusd): W1A2 0.22-0.36 / - / 0.56-0.63; W2A2 0.44-0.73 against
#:   0.55-0.64 (two convs each); W1A4 0.36-0.59 / - / 0.58-0.74; W2A3 0.64-0.83 against
#:   0.57-0.64: with VNNI from 4 branches on the dot step is as cheap.
LUT_MAX_WEIGHT_BITS = 2
_LUT_MAX_BRANCHES = {"avx2": 6, "avx512": 6, "vnni": 4}


def lut_max_branches(dot_family: str | None) -> int:
    """Up to how many branches the lookups beat the class's dot step (see above)."""
    return _LUT_MAX_BRANCHES.get(dot_family, 6)


def _desc():
    @T.prim_func(s_tir=True)
    def desc(w: T.Buffer((LUT_LANES,), "uint8", offset_factor=1),
             t: T.Buffer((NIBBLE_VALUES,), "uint8", offset_factor=1),
             c: T.Buffer((LUT_LANES,), "uint8", offset_factor=1, scope=TILE_SCOPE)) -> None:
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


def _lookup(t, index):
    """``vpshufb``: the 16-byte table ``t`` (in both 128-bit lanes) at 32 indices below 16."""
    return T.call_llvm_pure_intrin(
        T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pshuf.b"),
        T.Shuffle([t.vload([0], "uint8x16"), t.vload([0], "uint8x16")],
                  list(range(NIBBLE_VALUES)) * 2), index, dtype="uint8x32")


def _impl():
    lanes = T.ramp(T.int32(0), 1, LUT_LANES)

    @T.prim_func(s_tir=True)
    def impl(w: T.Buffer((LUT_LANES,), "uint8", offset_factor=1),
             t: T.Buffer((NIBBLE_VALUES,), "uint8", offset_factor=1),
             c: T.Buffer((LUT_LANES,), "uint8", offset_factor=1, scope=TILE_SCOPE)) -> None:
        with T.sblock("root"):
            T.reads(c[0:LUT_LANES], w[0:LUT_LANES], t[0:NIBBLE_VALUES])
            T.writes(c[0:LUT_LANES])
            # No named temporaries: TVMScript makes each a "local" buffer, which TVM puts
            # in the workspace heap (target/cpu/schedule.py: TILE_SCOPE).
            c[lanes] = c[lanes] + _lookup(t, w.vload([0], "uint8x32"))

    return impl


def _paired_desc():
    @T.prim_func(s_tir=True)
    def desc(w: T.Buffer((LUT_LANES,), "uint8", offset_factor=1),
             t: T.Buffer((NIBBLE_VALUES,), "uint8", offset_factor=1),
             c: T.Buffer((2, LUT_LANES), "uint8", offset_factor=1, scope=TILE_SCOPE)) -> None:
        with T.sblock("root"):
            T.reads(c[0:2, 0:LUT_LANES], w[0:LUT_LANES], t[0:NIBBLE_VALUES])
            T.writes(c[0:2, 0:LUT_LANES])
            for s, i, v in T.grid(2, LUT_LANES, NIBBLE_VALUES):
                with T.sblock("update"):
                    vs, vi, vv = T.axis.remap("SSR", [s, i, v])
                    c[vs, vi] = c[vs, vi] + T.if_then_else(
                        T.bitwise_and(T.shift_right(w[vi], T.Cast("uint8", vs * 4)),
                                      T.uint8(15)) == T.Cast("uint8", vv), t[vv], T.uint8(0))

    return desc


def _paired_impl():
    lanes = T.ramp(T.int32(0), 1, LUT_LANES)

    @T.prim_func(s_tir=True)
    def impl(w: T.Buffer((LUT_LANES,), "uint8", offset_factor=1),
             t: T.Buffer((NIBBLE_VALUES,), "uint8", offset_factor=1),
             c: T.Buffer((2, LUT_LANES), "uint8", offset_factor=1, scope=TILE_SCOPE)) -> None:
        with T.sblock("root"):
            T.reads(c[0:2, 0:LUT_LANES], w[0:LUT_LANES], t[0:NIBBLE_VALUES])
            T.writes(c[0:2, 0:LUT_LANES])
            # The loads repeat rather than sit in named temporaries (see _impl); LLVM merges them.
            c[0, lanes] = c[0, lanes] + _lookup(t, T.bitwise_and(
                w.vload([0], "uint8x32"), T.Broadcast(T.uint8(15), LUT_LANES)))
            c[1, lanes] = c[1, lanes] + _lookup(t, T.shift_right(
                w.vload([0], "uint8x32"), T.Broadcast(T.uint8(4), LUT_LANES)))

    return impl


@functools.lru_cache(maxsize=None)
def lookup_step(pairs: bool = False) -> str:
    """The TensorIntrin of one lookup step (of a byte per channel, or ``pairs``: a byte per
    two channels), registered on first use."""
    if pairs:
        name = "tvm_qnn.x86.lut_pairs_avx2"
        TensorIntrin.register(name, _paired_desc(), _paired_impl(), override=True)
    else:
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
    lane_dims = int(sch.get(block).annotations.get(LUT_ATTR, 0))
    if lane_dims:  # the (lane dims x entries) loops innermost
        sch.tensorize(sch.get_loops(block)[-1 - lane_dims], lookup_step(lane_dims == 2))


__all__ = ["LUT_MAX_WEIGHT_BITS", "lookup_step", "lut_max_branches", "tensorize_lookups"]
