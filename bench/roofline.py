# SPDX-License-Identifier: Apache-2.0
"""The popcount roofline: how many 1-bit MACs per second xor + popcount + add can do here.

    python -m bench.roofline [--threads 1 2] [--mcpu haswell]

A TensorIR kernel keeps a 4 × 4 tile of 512-bit accumulators in registers and streams two
16 KiB operand blocks that stay in L1::

    acc[t, m, n, :] += popcount(A[m, k, :] xor B[n, k, :])     for r < R, k < K

one ``vpxorq`` + ``vpopcntq`` + ``vpaddq`` (zmm) per 512 bit-MACs, the loop over ``t`` parallel
over the threads. No loads from memory beyond L1 and no epilogue: the rate is the ceiling of
any xor/popcount kernel on this core (BASELINES.md measured 1.41 T bit-MAC/s per core with a
hand-written C loop). The roofline time of a bit-serial layer is then
``branches × MACs / rate`` with ``branches = weight bits × activation bits``.

A target whose kernels use byte words (x86 without VPOPCNTDQ: the ``vpshufb`` nibble-table
popcount counts bytes) gets the byte-word probe instead: uint8 lanes of the ISA's widest
vector, a 4 × 2 tile whose popcounts are summed in uint8 lanes for :data:`CHUNK` words and
widened to uint32 once per chunk, as the layer kernels do. Measured on a Zen 4 running
``x86:haswell`` code, 1 thread: 0.40 T bit-MAC/s, against 0.33 T for the 64-bit word probe
on the same code (its ``vpsadbw`` + ``vpaddq`` after every word's count): the 64-bit probe
put byte-word layers above their roofline.
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

TILE_M = 4  # rows of A per register tile
TILE_N = 4  # rows of B per register tile
LANES = 8  # uint64 lanes = one 512-bit register
WORDS = 64  # K: 64 words of 512 bits per row -> A and B 16 KiB each (L1)
# The byte-word probe: tile, and words of a chunk (8 × 31 = 248: a uint8 lane holds the sum).
BYTE_TILE_M, BYTE_TILE_N = 4, 2
CHUNK = 31


def probe_kernel(threads: int, repeats: int):
    """The probe PrimFunc for ``threads`` parallel tiles and ``repeats`` passes over K."""
    import tvm
    from tvm import s_tir, te, tirx

    a = te.placeholder((TILE_M, WORDS, LANES), "uint64", "A")
    b = te.placeholder((TILE_N, WORDS, LANES), "uint64", "B")
    r = te.reduce_axis((0, repeats), "r")
    k = te.reduce_axis((0, WORDS), "k")
    acc = te.compute((threads, TILE_M, TILE_N, LANES),
                     lambda t, m, n, lane: te.sum(
                         tirx.popcount(a[m, k, lane] ^ b[n, (k + r) % WORDS, lane]),
                         axis=[r, k]), name="acc")
    sch = s_tir.Schedule(te.create_prim_func([a, b, acc]))
    block = sch.get_sblock("acc")
    local = sch.cache_write(block, 0, "local")
    t, m, n, lane, rr, kk = sch.get_loops(block)
    sch.reorder(t, rr, kk, m, n, lane)
    sch.reverse_compute_at(local, t)
    sch.unroll(m)
    sch.unroll(n)
    sch.vectorize(lane)
    sch.parallel(t)
    sch.decompose_reduction(block, rr)
    return sch.mod["main"].with_attr("global_symbol", "popcount_probe"), tvm


def byte_probe_kernel(threads: int, repeats: int, lanes: int):
    """The byte-word probe: ``lanes`` uint8 lanes (one vector), the ``BYTE_TILE`` in uint8
    accumulators for a chunk of :data:`CHUNK` words, then widened into uint32."""
    import tvm
    from tvm import s_tir, te, tirx

    words = byte_words(lanes)
    a = te.placeholder((BYTE_TILE_M, words, lanes), "uint8", "A")
    b = te.placeholder((BYTE_TILE_N, words, lanes), "uint8", "B")
    k = te.reduce_axis((0, CHUNK), "k")
    chunk = te.compute(
        (threads, repeats, words // CHUNK, BYTE_TILE_M, BYTE_TILE_N, lanes),
        lambda t, r, c, m, n, lane: te.sum(tirx.popcount(
            a[m, c * CHUNK + k, lane] ^ b[n, (c * CHUNK + k + r) % words, lane]), axis=k),
        name="chunk")
    r = te.reduce_axis((0, repeats), "r")
    c = te.reduce_axis((0, words // CHUNK), "c")
    acc = te.compute((threads, BYTE_TILE_M, BYTE_TILE_N, lanes),
                     lambda t, m, n, lane: te.sum(chunk[t, r, c, m, n, lane].astype("uint32"),
                                                  axis=[r, c]), name="acc")
    sch = s_tir.Schedule(te.create_prim_func([a, b, acc]))
    block, inner = sch.get_sblock("acc"), sch.get_sblock("chunk")
    t, m, n, lane, rr, cc = sch.get_loops(block)
    sch.reorder(t, rr, cc, m, n, lane)
    sch.compute_at(inner, cc, preserve_unit_loops=True)
    sch.set_scope(inner, 0, "local")
    cm, cn, clane, ck = sch.get_loops(inner)[-4:]
    sch.reorder(ck, cm, cn, clane)  # the chunk's words outermost: the tile stays in registers
    for loop in (cm, cn, m, n):
        sch.unroll(loop)
    sch.vectorize(clane)
    sch.vectorize(lane)
    sch.parallel(t)
    sch.decompose_reduction(inner, ck)
    sch.decompose_reduction(block, rr)
    return sch.mod["main"].with_attr("global_symbol", "popcount_probe"), tvm


def byte_words(lanes: int) -> int:
    """Words per row of the byte-word probe: whole chunks, about 16 KiB for A."""
    return CHUNK * max(1, 16384 // (BYTE_TILE_M * lanes * CHUNK))


def bit_macs(threads: int, repeats: int, byte_lanes: int | None = None) -> int:
    """1-bit MACs one call of the probe performs (``byte_lanes``: the byte-word probe's)."""
    if byte_lanes:
        return threads * repeats * byte_words(byte_lanes) * BYTE_TILE_M * BYTE_TILE_N * \
            byte_lanes * 8
    return threads * repeats * WORDS * TILE_M * TILE_N * LANES * 64


def measure(threads: int, repeats: int = 5000, rounds: int = 5, repeat: int = 10,
            number: int = 3, target="x86") -> dict:
    """Run the probe on ``threads`` threads: ``{"threads", "bit_macs_per_s", "isa"}``.

    ``word_bits`` says which probe ran: 8 for a target whose kernels use byte words. The
    rate is that of the **fastest** of ``rounds × repeat`` timings (``number`` calls
    each, ~2 ms per call): a roofline is a peak actually reached, and on shared cores any
    slower sample only measures the neighbours. The caller pins the process and configures
    TVM's thread pool (see ``bench.peers.pin``). ``target``: the code's target (e.g. an
    ``X86Target(mcpu="haswell")`` for the AVX2 ``vpshufb`` popcount).
    """
    from tvm_qnn.target import resolve_target

    qnn_target = resolve_target(target)
    lanes = probe_byte_lanes(qnn_target)
    if lanes:
        func, tvm = byte_probe_kernel(threads, repeats, lanes)
        shapes = [(BYTE_TILE_M, byte_words(lanes), lanes), (BYTE_TILE_N, byte_words(lanes), lanes)]
        dtype, out_shape = np.uint8, (threads, BYTE_TILE_M, BYTE_TILE_N, lanes)
    else:
        func, tvm = probe_kernel(threads, repeats)
        shapes = [(TILE_M, WORDS, LANES), (TILE_N, WORDS, LANES)]
        dtype, out_shape = np.uint64, (threads, TILE_M, TILE_N, LANES)
    module = tvm.compile(func, qnn_target.tvm_target).mod
    asm = module.inspect_source("asm")
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.integers(0, np.iinfo(dtype).max, size=s, dtype=dtype,
                                            endpoint=True), dev) for s in shapes]
    out = tvm.runtime.tensor(np.zeros(out_shape, np.uint32 if lanes else np.uint64), dev)
    module["popcount_probe"](*args, out)  # warm-up (and thread pool start)
    want = _reference(args[0].numpy(), args[1].numpy(), repeats)
    if not np.array_equal(out.numpy()[0], want):
        raise RuntimeError("popcount probe computed a wrong result")
    timer = module.time_evaluator("popcount_probe", dev, number=number, repeat=repeat)
    seconds = min(min(timer(*args, out).results) for _ in range(rounds))
    return {"threads": threads, "bit_macs_per_s": bit_macs(threads, repeats, lanes) / seconds,
            "isa": isa_of(asm), "word_bits": 8 if lanes else 64}


def probe_byte_lanes(qnn_target) -> int | None:
    """Byte lanes of the byte-word probe for a target whose kernels use byte words (the
    ISA's widest vector: 64 with AVX512BW, 32 with AVX2, 16 on NEON); None: the 64-bit
    word probe."""
    if qnn_target.layout.word_bits != 8:
        return None
    from tvm_qnn.target import X86Target
    from tvm_qnn.target.x86 import isa_features

    if not isinstance(qnn_target, X86Target):
        return 16
    return 64 if "avx512bw" in isa_features(qnn_target.mcpu) else 32


def _reference(a: np.ndarray, b: np.ndarray, repeats: int) -> np.ndarray:
    """``acc[m, n, :]`` of one tile computed with numpy: pass ``r`` pairs row ``k`` of A
    with row ``(k + r) mod K`` of B, so passes differ only by a cyclic shift."""
    words = a.shape[1]
    shifts = np.bincount(np.arange(repeats) % words, minlength=words).astype(np.uint64)
    out = np.zeros((a.shape[0], b.shape[0], a.shape[2]), np.uint64)
    for s in np.flatnonzero(shifts):
        x = a[:, None] ^ np.roll(b, -s, axis=1)[None]  # m, n, k, lane
        bits = 8 * x.dtype.itemsize
        pop = np.unpackbits(x.view(np.uint8), axis=-1).reshape(*x.shape, bits).sum(-1)
        out += pop.sum(axis=2).astype(np.uint64) * shifts[s]
    return out


def isa_of(asm: str) -> str:
    """The popcount (or byte dot-product) instruction found in generated assembly:
    ``vpopcntq zmm``, ``vpshufb lut``, ``vpmaddubsw ymm`` etc."""
    for name in ("vpdpbusd", "vpmaddubsw"):
        for reg in ("zmm", "ymm"):
            if re.search(rf"\b{name}\s[^\n]*%{reg}", asm):
                return f"{name} {reg}"
    for name, reg in (("vpopcntq", "zmm"), ("vpopcntq", "ymm"), ("vpopcntq", "xmm")):
        if f"{name}\t%{reg}" in asm:
            return f"{name} {reg}"
    if "vpshufb" in asm:
        return "vpshufb lut"
    if "popcnt" in asm:
        return "popcnt gpr"
    return "other"


def main(argv=None) -> int:
    """Print the probe's rate per thread count."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5000)
    parser.add_argument("--mcpu", help="the code's x86 CPU (default: this host's), e.g. "
                        "haswell for the AVX2 byte-word probe")
    args = parser.parse_args(argv)
    target = f"x86:{args.mcpu}" if args.mcpu else "x86"
    from .peers import pin, prepare_threads

    prepare_threads(max(args.threads))
    for threads in args.threads:
        pin(threads)
        res = measure(threads, args.repeats, target=target)
        print(f"roofline: threads={threads} bit_macs_per_s={res['bit_macs_per_s']:.4g} "
              f"per_core={res['bit_macs_per_s'] / threads:.4g} isa={res['isa']} "
              f"word_bits={res['word_bits']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
