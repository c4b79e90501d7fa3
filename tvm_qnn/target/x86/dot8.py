# SPDX-License-Identifier: Apache-2.0
"""The u8 × s8 dot-product step of the int8-dot kernel on x86, and when it beats popcounts.

One step multiplies 4 activation bytes (one input position, 4 channels, broadcast) with
``OCi × 4`` weight bytes and adds the sums to ``OCi`` int32 accumulators:

* AVX2: ``vpmaddubsw`` (pairs of u8 × s8 products in int16) + ``vpmaddwd`` by ones (pairs of
  int16 in int32) + ``vpaddd``; 8 channels per ymm;
* AVX-512BW: the same on zmm, 16 channels;
* AVX-512 VNNI: one ``vpdpbusd``, 16 channels.

Registered as TensorIntrins (TVM's own 16×4 ones live in ``tvm.s_tir.tensor_intrin``, whose
import also registers every GPU intrinsic: 52 s, so they are declared here).
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

AVX2_DOT = "tvm_qnn.x86.dot_8x4_avx2"
AVX512_DOT = "tvm_qnn.x86.dot_16x4_avx512"
VNNI_DOT = "tvm_qnn.x86.dot_16x4_vnni"


def _desc(lanes: int):
    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((4,), "uint8", offset_factor=1),
             b: T.Buffer((lanes, 4), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
            T.writes(c[0:lanes])
            for i, k in T.grid(lanes, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")

    return desc


def _pmadd(lanes: int, pmaddubsw: str, pmaddwd: str):
    """The step as ``pmaddubsw`` + ``pmaddwd`` by ones + add (AVX2: 8 lanes; AVX-512BW: 16)."""
    nbytes = 4 * lanes

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4,), "uint8", offset_factor=1),
             b: T.Buffer((lanes, 4), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
            T.writes(c[0:lanes])
            a_i32 = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
            a_bytes = T.reinterpret(T.broadcast(a_i32, lanes), dtype=f"uint8x{nbytes}")
            pairs = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(pmaddubsw), a_bytes,
                b.vload([0, 0], dtype=f"int8x{nbytes}"), dtype=f"int16x{2 * lanes}")
            c[T.ramp(T.int32(0), 1, lanes)] += T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(pmaddwd), pairs,
                T.broadcast(T.int16(1), 2 * lanes), dtype=f"int32x{lanes}")

    return impl


@T.prim_func(s_tir=True)
def _vnni(a: T.Buffer((4,), "uint8", offset_factor=1),
          b: T.Buffer((16, 4), "int8", offset_factor=1),
          c: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(c[0:16], a[0:4], b[0:16, 0:4])
        T.writes(c[0:16])
        a_i32 = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
        # LLVM 19 declares the byte operands as <64 x i8>.
        c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            c.vload([0], dtype="int32x16"),
            T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64"),
            b.vload([0, 0], dtype="int8x64"), dtype="int32x16")


TensorIntrin.register(AVX2_DOT, _desc(8), _pmadd(8, "llvm.x86.avx2.pmadd.ub.sw",
                                                 "llvm.x86.avx2.pmadd.wd"), override=True)
TensorIntrin.register(AVX512_DOT, _desc(16), _pmadd(16, "llvm.x86.avx512.pmaddubs.w.512",
                                                    "llvm.x86.avx512.pmaddw.d.512"),
                      override=True)
TensorIntrin.register(VNNI_DOT, _desc(16), _vnni, override=True)


def dot8_kernel(features: frozenset[str]) -> tuple[str, int, int] | None:
    """``(intrinsic, channels per step, from how many branches it beats popcounts)`` for an
    x86 CPU with LLVM ``features`` (normalized names), or None where popcounts stay.

    The threshold compares µops per multiply-accumulate of a layer of B branches. On AVX2 a
    ``vpshufb`` popcount costs about 8 µops per 256 bit-products with the xor and the
    accumulation (2 per 64), and the dot step 3 µops per 32 products: the step wins from
    B = 4 (W2A2) on; measured on Zen 3 (``python -m bench``, docs/cpu_kernels.md). AVX-512
    classes keep popcounts for now: ``vpopcntq`` makes them 8× cheaper there, and the
    thresholds of the 16-lane steps (declared above) are not measured yet.
    """
    if "avx2" not in features or "avx512f" in features:
        return None
    return AVX2_DOT, 8, 4


__all__ = ["AVX2_DOT", "AVX512_DOT", "VNNI_DOT", "dot8_kernel"]
