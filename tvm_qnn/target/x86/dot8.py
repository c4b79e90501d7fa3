# SPDX-License-Identifier: Apache-2.0
"""The u8 × s8 dot-product step of the int8-dot kernel on x86, and when it beats popcounts.

One step multiplies the 4-channel groups of one input position (4 bytes each, broadcast) with
``groups × OCi × 4`` weight bytes and adds the sums to ``OCi`` int32 accumulators:

* AVX2: per group a ``vpmaddubsw`` (pairs of u8 × s8 products in int16) added in int16, then
  one ``vpmaddwd`` by ones (pairs of int16 in int32) + ``vpaddd``; 8 channels per ymm. The plan
  sizes ``groups`` so the int16 sums cannot overflow (:func:`~tvm_qnn.topi.dot8_conv.dot8_groups`);
* AVX-512BW: the same on zmm, 16 channels;
* AVX-512 VNNI: one ``vpdpbusd`` per group, 16 channels.

Registered as TensorIntrins (TVM's own 16×4 ones live in ``tvm.s_tir.tensor_intrin``, whose
import also registers every GPU intrinsic: 52 s, so they are declared here).
"""

from __future__ import annotations

import functools

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ...topi.attrs import BRANCH_BLOCK, DOT8_GROUPS_ATTR

# The instruction families of the step: (lanes, llvm intrinsics).
_PMADD = {"avx2": (8, "llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"),
          "avx512": (16, "llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512")}
_VNNI = "llvm.x86.avx512.vpdpbusd.512"


def _desc(lanes: int, groups: int):
    """``c[i] += sum_{q, k} a[4q + k] b[q, i, k]``: ``groups`` 4-channel groups of one input
    position against ``lanes`` output channels (one group: ``b[i, k]``, no ``q`` loop)."""
    if groups == 1:
        @T.prim_func(s_tir=True)
        def desc1(a: T.Buffer((4,), "uint8", offset_factor=1),
                  b: T.Buffer((lanes, 4), "int8", offset_factor=1),
                  c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
            with T.sblock("root"):
                T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
                T.writes(c[0:lanes])
                for i, k in T.grid(lanes, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")

        return desc1

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((4 * groups,), "uint8", offset_factor=1),
             b: T.Buffer((groups, lanes, 4), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4 * groups], b[0:groups, 0:lanes, 0:4])
            T.writes(c[0:lanes])
            for i, q, k in T.grid(lanes, groups, 4):
                with T.sblock("update"):
                    vi, vq, vk = T.axis.remap("SRR", [i, q, k])
                    c[vi] = c[vi] + T.cast(a[vq * 4 + vk], "int32") * T.cast(b[vq, vi, vk],
                                                                            "int32")

    return desc


def _pmadd(family: str, groups: int):
    """``pmaddubsw`` per group into int16 pair sums (plain int16 adds: the plan bounds them),
    then one ``pmaddwd`` by ones and an add into the int32 accumulators."""
    lanes, pmaddubsw, pmaddwd = _PMADD[family]
    nbytes, pairs = 4 * lanes, 2 * lanes
    if groups == 1:
        @T.prim_func(s_tir=True)
        def impl1(a: T.Buffer((4,), "uint8", offset_factor=1),
                  b: T.Buffer((lanes, 4), "int8", offset_factor=1),
                  c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
            with T.sblock("root"):
                T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
                T.writes(c[0:lanes])
                a_i32 = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
                sums = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(pmaddubsw),
                    T.reinterpret(T.broadcast(a_i32, lanes), dtype=f"uint8x{nbytes}"),
                    b.vload([0, 0], dtype=f"int8x{nbytes}"), dtype=f"int16x{pairs}")
                c[T.ramp(T.int32(0), 1, lanes)] += T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(pmaddwd), sums,
                    T.broadcast(T.int16(1), pairs), dtype=f"int32x{lanes}")

        return impl1

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4 * groups,), "uint8", offset_factor=1),
             b: T.Buffer((groups, lanes, 4), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4 * groups], b[0:groups, 0:lanes, 0:4])
            T.writes(c[0:lanes])
            acc = T.alloc_buffer((pairs,), "int16", scope="local")
            acc[T.ramp(T.int32(0), 1, pairs)] = T.broadcast(T.int16(0), pairs)
            for q in T.unroll(groups):
                a_i32 = T.reinterpret(a.vload([q * 4], "uint8x4"), dtype="int32")
                acc[T.ramp(T.int32(0), 1, pairs)] = acc[T.ramp(T.int32(0), 1, pairs)] + \
                    T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id(pmaddubsw),
                        T.reinterpret(T.broadcast(a_i32, lanes), dtype=f"uint8x{nbytes}"),
                        b.vload([q, 0, 0], dtype=f"int8x{nbytes}"), dtype=f"int16x{pairs}")
            c[T.ramp(T.int32(0), 1, lanes)] += T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(pmaddwd), acc[T.ramp(T.int32(0), 1, pairs)],
                T.broadcast(T.int16(1), pairs), dtype=f"int32x{lanes}")

    return impl


def _vnni(groups: int):
    """One ``vpdpbusd`` per group, straight into the int32 accumulators."""
    if groups == 1:
        @T.prim_func(s_tir=True)
        def impl1(a: T.Buffer((4,), "uint8", offset_factor=1),
                  b: T.Buffer((16, 4), "int8", offset_factor=1),
                  c: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
            with T.sblock("root"):
                T.reads(c[0:16], a[0:4], b[0:16, 0:4])
                T.writes(c[0:16])
                a_i32 = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
                c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(_VNNI), c.vload([0], dtype="int32x16"),
                    T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64"),
                    b.vload([0, 0], dtype="int8x64"), dtype="int32x16")

        return impl1

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4 * groups,), "uint8", offset_factor=1),
             b: T.Buffer((groups, 16, 4), "int8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4 * groups], b[0:groups, 0:16, 0:4])
            T.writes(c[0:16])
            for q in T.unroll(groups):
                a_i32 = T.reinterpret(a.vload([q * 4], "uint8x4"), dtype="int32")
                # LLVM 19 declares the byte operands as <64 x i8>.
                c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(_VNNI), c.vload([0], dtype="int32x16"),
                    T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64"),
                    b.vload([q, 0, 0], dtype="int8x64"), dtype="int32x16")

    return impl


def lanes_of(family: str) -> int:
    """Output channels per step of an instruction ``family`` (avx2, avx512, vnni)."""
    return 16 if family == "vnni" else _PMADD[family][0]


@functools.lru_cache(maxsize=None)
def dot_step(family: str, groups: int) -> str:
    """The TensorIntrin of a step over ``groups`` 4-channel groups (registered on first use:
    parsing it costs a little, and a model uses few)."""
    name = f"tvm_qnn.x86.dot_{family}_g{groups}"
    impl = _vnni(groups) if family == "vnni" else _pmadd(family, groups)
    TensorIntrin.register(name, _desc(lanes_of(family), groups), impl, override=True)
    return name


def tensorize_dot_steps(sch, family: str) -> None:
    """Replace the (output channels × groups × 4 taps) loops the CPU template leaves innermost
    in a int8-dot kernel by the ``family``'s step (no-op for other kernels)."""
    update = f"{BRANCH_BLOCK}_update"
    try:
        block = sch.get_sblock(update)
    except Exception:  # noqa: BLE001 - TVM raises a generic error for a missing block
        return
    groups = int(sch.get(block).annotations.get(DOT8_GROUPS_ATTR, 0))
    if groups:  # innermost: (channels, groups, 4 taps), or (channels, 4 taps) for one group
        sch.tensorize(sch.get_loops(block)[-3 if groups > 1 else -2], dot_step(family, groups))


def dot_family(features: frozenset[str]) -> str | None:
    """The best dot-step instruction family of an x86 CPU with LLVM ``features``."""
    if "avx512vnni" in features and "avx512bw" in features:
        return "vnni"
    if "avx512bw" in features:
        return "avx512"
    return "avx2" if "avx2" in features else None


def dot8_kernel(features: frozenset[str]) -> tuple[str, int] | None:
    """``(instruction family, from how many branches it beats popcounts)`` for an x86 CPU
    with LLVM ``features`` (normalized names), or None where popcounts stay.

    The threshold compares µops per multiply-accumulate of a layer of B branches. On AVX2 a
    ``vpshufb`` popcount costs about 8 µops per 256 bit-products with the xor and the
    accumulation (2 per 64); the dot step ``vpmaddubsw`` + ``vpaddw`` costs 2 per 32 products
    (one ``vpmaddwd`` and ``vpaddd`` per 4 groups). Measured on Zen 3 (one core, suite convs,
    the popcount kernel as inside a chain): W2A2 1.23-1.62x faster on the dot kernel, 3
    branches mixed (conv56 1.24x, conv7 0.84-0.96x), W1A2 0.76-1.02x: from B = 4 on.
    AVX-512 classes keep popcounts for now: ``vpopcntq`` makes them 8× cheaper there, and the
    16-lane steps (declared above, checked in the assembly by the tests) have no measured
    threshold yet.
    """
    if "avx2" not in features or "avx512f" in features:
        return None
    return "avx2", 4


__all__ = ["dot8_kernel", "dot_family", "dot_step", "lanes_of", "tensorize_dot_steps"]
