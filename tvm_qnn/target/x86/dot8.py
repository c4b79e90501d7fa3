# SPDX-License-Identifier: Apache-2.0
"""The u8 × s8 dot-product step of the int8-dot kernel on x86, and when it beats popcounts.

One step multiplies the 4-channel groups of one input position (4 bytes each, broadcast) with
``groups × OCi × 4`` weight bytes and adds the sums to ``OCi`` int32 accumulators:

* AVX2: per group a ``vpmaddubsw`` (pairs of u8 × s8 products in int16) added in int16, then
  one ``vpmaddwd`` by ones (pairs of int16 in int32) + ``vpaddd``; 8 channels per ymm. The plan
  sizes ``groups`` so the int16 sums cannot overflow (:func:`~tvm_qnn.topi.dot8_conv.dot8_groups`);
* AVX-512BW: the same on zmm, 16 channels;
* AVX-512 VNNI: one ``vpdpbusd`` per group, 16 channels.

The AVX-512 families also have an 8-channel step (the same instructions on ymm, AVX512VL) for
layers whose channels are a multiple of 8 but not of 16 (ProxylessNAS' 24, 56, 136): without
it such a layer fell back to the plain integer kernel, several times slower.

Registered as TensorIntrins (TVM's own 16×4 ones live in ``tvm.s_tir.tensor_intrin``, whose
import also registers every GPU intrinsic: 52 s, so they are declared here).
"""

from __future__ import annotations

import functools

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ...topi.attrs import BRANCH_BLOCK, DOT8_GROUPS_ATTR
from ..cpu.schedule import TILE_SCOPE

# The multiply-add steps by vector width (int32 lanes): llvm intrinsics.
_PMADD = {8: ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"),
          16: ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512")}
_VNNI = {8: "llvm.x86.avx512.vpdpbusd.256", 16: "llvm.x86.avx512.vpdpbusd.512"}
# Int32 lanes of each family's widest step, and of its narrow one (None: it has none).
_LANES = {"avx2": 8, "avx512": 16, "vnni": 16}
_NARROW_LANES = {"avx2": None, "avx512": 8, "vnni": 8}


def _word_broadcast(buf, index, lanes: int):
    """The 4 input bytes at ``buf[index]`` repeated over ``lanes`` 4-byte lanes, as the byte
    operand of a dot step (one expression: a named temporary would be a "local" buffer,
    lut.py says why that matters)."""
    return T.reinterpret(T.broadcast(T.reinterpret(buf.vload([index], "uint8x4"), dtype="int32"),
                                     lanes), dtype=f"uint8x{4 * lanes}")


def _desc(lanes: int, groups: int):
    """``c[i] += sum_{q, k} a[4q + k] b[q, i, k]``: ``groups`` 4-channel groups of one input
    position against ``lanes`` output channels (one group: ``b[i, k]``, no ``q`` loop)."""
    if groups == 1:
        @T.prim_func(s_tir=True)
        def desc1(a: T.Buffer((4,), "uint8", offset_factor=1),
                  b: T.Buffer((lanes, 4), "int8", offset_factor=1),
                  c: T.Buffer((lanes,), "int32", offset_factor=1, scope=TILE_SCOPE)) -> None:
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
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope=TILE_SCOPE)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4 * groups], b[0:groups, 0:lanes, 0:4])
            T.writes(c[0:lanes])
            for i, q, k in T.grid(lanes, groups, 4):
                with T.sblock("update"):
                    vi, vq, vk = T.axis.remap("SRR", [i, q, k])
                    c[vi] = c[vi] + T.cast(a[vq * 4 + vk], "int32") * T.cast(b[vq, vi, vk],
                                                                            "int32")

    return desc


def _pmadd(lanes: int, groups: int):
    """``pmaddubsw`` per group into int16 pair sums (plain int16 adds: the plan bounds them),
    then one ``pmaddwd`` by ones and an add into the int32 accumulators."""
    pmaddubsw, pmaddwd = _PMADD[lanes]
    nbytes, pairs = 4 * lanes, 2 * lanes
    if groups == 1:
        @T.prim_func(s_tir=True)
        def impl1(a: T.Buffer((4,), "uint8", offset_factor=1),
                  b: T.Buffer((lanes, 4), "int8", offset_factor=1),
                  c: T.Buffer((lanes,), "int32", offset_factor=1, scope=TILE_SCOPE)) -> None:
            with T.sblock("root"):
                T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
                T.writes(c[0:lanes])
                c[T.ramp(T.int32(0), 1, lanes)] += T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(pmaddwd),
                    T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id(pmaddubsw),
                        _word_broadcast(a, 0, lanes),
                        b.vload([0, 0], dtype=f"int8x{nbytes}"), dtype=f"int16x{pairs}"),
                    T.broadcast(T.int16(1), pairs), dtype=f"int32x{lanes}")

        return impl1

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4 * groups,), "uint8", offset_factor=1),
             b: T.Buffer((groups, lanes, 4), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope=TILE_SCOPE)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4 * groups], b[0:groups, 0:lanes, 0:4])
            T.writes(c[0:lanes])
            acc = T.alloc_buffer((pairs,), "int16", scope=TILE_SCOPE)
            acc[T.ramp(T.int32(0), 1, pairs)] = T.broadcast(T.int16(0), pairs)
            for q in T.unroll(groups):
                acc[T.ramp(T.int32(0), 1, pairs)] = acc[T.ramp(T.int32(0), 1, pairs)] + \
                    T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id(pmaddubsw),
                        _word_broadcast(a, q * 4, lanes),
                        b.vload([q, 0, 0], dtype=f"int8x{nbytes}"), dtype=f"int16x{pairs}")
            c[T.ramp(T.int32(0), 1, lanes)] += T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(pmaddwd), acc[T.ramp(T.int32(0), 1, pairs)],
                T.broadcast(T.int16(1), pairs), dtype=f"int32x{lanes}")

    return impl


def _vnni(lanes: int, groups: int):
    """One ``vpdpbusd`` per group, straight into the int32 accumulators."""
    nbytes, intrin = 4 * lanes, _VNNI[lanes]
    if groups == 1:
        @T.prim_func(s_tir=True)
        def impl1(a: T.Buffer((4,), "uint8", offset_factor=1),
                  b: T.Buffer((lanes, 4), "int8", offset_factor=1),
                  c: T.Buffer((lanes,), "int32", offset_factor=1, scope=TILE_SCOPE)) -> None:
            with T.sblock("root"):
                T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
                T.writes(c[0:lanes])
                c[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(intrin), c.vload([0], dtype=f"int32x{lanes}"),
                    _word_broadcast(a, 0, lanes),
                    b.vload([0, 0], dtype=f"int8x{nbytes}"), dtype=f"int32x{lanes}")

        return impl1

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4 * groups,), "uint8", offset_factor=1),
             b: T.Buffer((groups, lanes, 4), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope=TILE_SCOPE)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4 * groups], b[0:groups, 0:lanes, 0:4])
            T.writes(c[0:lanes])
            for q in T.unroll(groups):
                # LLVM 19 declares the byte operands as <4·lanes x i8>.
                c[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(intrin), c.vload([0], dtype=f"int32x{lanes}"),
                    _word_broadcast(a, q * 4, lanes),
                    b.vload([q, 0, 0], dtype=f"int8x{nbytes}"), dtype=f"int32x{lanes}")

    return impl


def lanes_of(family: str) -> int:
    """Output channels per step of an instruction ``family`` (avx2, avx512, vnni)."""
    return _LANES[family]


def narrow_lanes_of(family: str) -> int | None:
    """Output channels of the ``family``'s narrow step (8 on the AVX-512 families), or None."""
    return _NARROW_LANES[family]


def step_lanes(family: str) -> tuple[int, ...]:
    """Every step width of ``family``, widest first."""
    return tuple(n for n in (_LANES[family], _NARROW_LANES[family]) if n)


@functools.lru_cache(maxsize=None)
def dot_step(family: str, groups: int, lanes: int | None = None) -> str:
    """The TensorIntrin of a step over ``groups`` 4-channel groups and ``lanes`` output
    channels (default: the family's widest), registered on first use: parsing it costs a
    little, and a model uses few."""
    lanes = lanes or _LANES[family]
    if lanes not in step_lanes(family):
        raise ValueError(f"dot family {family!r} has no {lanes}-channel step")
    suffix = "" if lanes == _LANES[family] else f"_x{lanes}"
    name = f"tvm_qnn.x86.dot_{family}_g{groups}{suffix}"
    impl = _vnni(lanes, groups) if family == "vnni" else _pmadd(lanes, groups)
    TensorIntrin.register(name, _desc(lanes, groups), impl, override=True)
    return name


def tensorize_dot_steps(sch, family: str) -> None:
    """Replace the (output channels × groups × 4 taps) loops the CPU template leaves innermost
    in a int8-dot kernel by the ``family``'s step of that many channels (no-op for other
    kernels)."""
    update = f"{BRANCH_BLOCK}_update"
    try:
        block = sch.get_sblock(update)
    except Exception:  # noqa: BLE001 - TVM raises a generic error for a missing block
        return
    groups = int(sch.get(block).annotations.get(DOT8_GROUPS_ATTR, 0))
    if groups:  # innermost: (channels, groups, 4 taps), or (channels, 4 taps) for one group
        channels = sch.get_loops(block)[-3 if groups > 1 else -2]
        lanes = int(sch.get(channels).extent)
        sch.tensorize(channels, dot_step(family, groups, lanes))


def dot_family(features: frozenset[str]) -> str | None:
    """The best dot-step instruction family of an x86 CPU with LLVM ``features``."""
    if "avx512vnni" in features and "avx512bw" in features:
        return "vnni"
    if "avx512bw" in features:
        return "avx512"
    return "avx2" if "avx2" in features else None


#: The default register tile of an int8-dot conv per step family: (output columns, rows,
#: weight vectors), each reduced to the largest divisor of its extent. Measured on Zen 4 (one
#: core, suite convs W2A2): the old 2 x 1 x 2 tile became 1 x 1 x 2 on 7-wide outputs (2 is not
#: a divisor of 7), too few accumulators to hide the multiply-add latency: conv7 took 1.09 ms
#: on VNNI and 1.13-1.22 ms on AVX2; with up to 8 columns (7 there) 0.52 and 0.85 ms, the
#: other suite convs equal or 4-15 % faster. AVX2 keeps one weight vector: its 16 ymm
#: registers hold 7-8 accumulators, a weight and the broadcast input.
DOT8_TILES = {"avx2": (8, 1, 1), "avx512": (8, 1, 2), "vnni": (8, 1, 2)}

# From how many branches (M·K) the dot step beats popcounts: (dot family, VPOPCNTDQ) ->
# branches. Measured per class on one core (suite convs, the popcount kernel as inside a chain,
# the dot kernel with the tiles above): see dot8_kernel.
_MIN_BRANCHES = {("avx2", False): 4, ("avx512", False): 3, ("vnni", False): 2,
                 ("vnni", True): 8, ("avx512", True): 12}
#: VPOPCNTDQ + VNNI on a core that runs 512-bit ``vpdpbusd`` on two ports (see dot8_kernel).
FULL_RATE_VNNI_MIN_BRANCHES = 4

#: Intel's Xeon cores with VPOPCNTDQ, whose two 512-bit FMA units (ports 0 and 5) both run
#: ``vpdpbusd``; its client cores (icelake-client, tigerlake, rocketlake) and Zen 4 have one
#: 512-bit rate (Intel's optimization manual; Zen 4 splits zmm into two 256-bit halves).
FULL_RATE_VNNI_CPUS = frozenset({"icelake-server", "sapphirerapids", "emeraldrapids",
                                 "graniterapids", "graniterapids-d", "diamondrapids"})


def dot8_kernel(features: frozenset[str],
                full_rate_vnni: bool = False) -> tuple[str, int] | None:
    """``(instruction family, from how many branches it beats popcounts)`` for an x86 CPU
    with LLVM ``features`` (normalized names), or None where popcounts stay.

    A popcount layer costs B (= M·K) times a binary one; the dot step costs the same at any
    bit width up to 8, so it wins from some B on, which depends on how cheap each is:

    Measured with ``python -m bench.kernel_families`` (``dot_x``: popcount time / dot time;
    ``bench/results/x86_kernel_families_znver4.json`` has every case):

    * AVX2 (``vpshufb`` popcount, ``vpmaddubsw`` step): from 4. Zen 3: W2A2 1.23-1.62x,
      3 branches mixed (0.84-1.25x), W1A2 0.76-1.02x. Zen 4 running ``x86:haswell`` code:
      W2A2 1.71-1.97x, W1A3 1.17-1.35x, W1A2 0.58-0.89x.
    * AVX-512 without VPOPCNTDQ (``vpshufb`` on zmm; Skylake-SP, Cascade Lake): where the
      vector unit is 256 bits wide (Zen 4) a zmm popcount is no cheaper per bit than a ymm
      one, the dot step is. Zen 4 running ``x86:skylake-avx512`` (``vpmaddubsw`` zmm): W1A3
      1.05-1.29x, W1A2 0.76-0.92x: from 3; ``x86:cascadelake`` (VNNI ``vpdpbusd``): W1A2
      1.05-1.20x: from 2.
    * AVX-512 VPOPCNTDQ with VNNI (Ice Lake, Sapphire Rapids, Zen 4/5): ``vpopcntq`` counts 64
      bits in one µop. Zen 4: W2A2 0.71-0.86x, W2A3 0.92-1.17x, W3A3 1.31-1.81x, W4A4
      1.80-3.29x: from 8 (W2A4, W3A3). Without VNNI (no such CPU has BW): 12, by the µop count
      of ``vpmaddubsw`` + ``vpaddw`` against one ``vpdpbusd``. An Intel core with full-rate
      512-bit ``vpdpbusd`` favours the dot step sooner (a Sapphire Rapids-class KVM guest
      running ``x86:icelake-server``, ``x86_kernel_families_icelake-server_on_spr.json``: W2A2
      0.98-1.23x, W1A3 0.69-0.94x, W1A2 0.50-0.63x; CNV_2W2A's smaller W2A2 convs, tuned with
      both families, 1.4-2.9x): from 4 there (``full_rate_vnni``: :data:`FULL_RATE_VNNI_CPUS`,
      or a host whose CPU calls itself a Xeon, since that guest's LLVM name is ``rocketlake``).

    The dot kernel's tiles, and tuning (which times both families, :mod:`tvm_qnn.tuning.
    families`), decide the close cases.
    """
    family = dot_family(features)
    if family is None:
        return None
    vpopcntdq = "avx512vpopcntdq" in features
    if full_rate_vnni and family == "vnni" and vpopcntdq:
        return family, FULL_RATE_VNNI_MIN_BRANCHES
    return family, _MIN_BRANCHES[family, vpopcntdq]


__all__ = ["DOT8_TILES", "FULL_RATE_VNNI_CPUS", "FULL_RATE_VNNI_MIN_BRANCHES", "dot8_kernel",
           "dot_family", "dot_step", "lanes_of", "narrow_lanes_of", "step_lanes",
           "tensorize_dot_steps"]
