# SPDX-License-Identifier: Apache-2.0
"""The popcount roofline: how many 1-bit MACs per second xor + popcount + add can do here.

    python -m bench.roofline [--threads 1 2]

A TensorIR kernel keeps a 4 × 4 tile of 512-bit accumulators in registers and streams two
16 KiB operand blocks that stay in L1::

    acc[t, m, n, :] += popcount(A[m, k, :] xor B[n, k, :])     for r < R, k < K

one ``vpxorq`` + ``vpopcntq`` + ``vpaddq`` (zmm) per 512 bit-MACs, the loop over ``t`` parallel
over the threads. No loads from memory beyond L1 and no epilogue: the rate is the ceiling of
any xor/popcount kernel on this core (BASELINES.md measured 1.41 T bit-MAC/s per core with a
hand-written C loop). The roofline time of a bit-serial layer is then
``branches × MACs / rate`` with ``branches = weight bits × activation bits``.
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


def bit_macs(threads: int, repeats: int) -> int:
    """1-bit MACs one call of the probe performs."""
    return threads * repeats * WORDS * TILE_M * TILE_N * LANES * 64


def measure(threads: int, repeats: int = 5000, rounds: int = 5, repeat: int = 10,
            number: int = 3, target="x86") -> dict:
    """Run the probe on ``threads`` threads: ``{"threads", "bit_macs_per_s", "isa"}``.

    The rate is that of the **fastest** of ``rounds × repeat`` timings (``number`` calls
    each, ~2 ms per call): a roofline is a peak actually reached, and on shared cores any
    slower sample only measures the neighbours. The caller pins the process and configures
    TVM's thread pool (see ``bench.peers.pin``). ``target``: the code's target (e.g. an
    ``X86Target(mcpu="haswell")`` for the AVX2 ``vpshufb`` popcount).
    """
    from tvm_qnn.target import resolve_target

    func, tvm = probe_kernel(threads, repeats)
    module = tvm.compile(func, resolve_target(target).tvm_target).mod
    asm = module.inspect_source("asm")
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.integers(0, 2**63, size=s, dtype=np.uint64), dev)
            for s in ((TILE_M, WORDS, LANES), (TILE_N, WORDS, LANES))]
    out = tvm.runtime.tensor(np.zeros((threads, TILE_M, TILE_N, LANES), np.uint64), dev)
    module["popcount_probe"](*args, out)  # warm-up (and thread pool start)
    want = _reference(args[0].numpy(), args[1].numpy(), repeats)
    if not np.array_equal(out.numpy()[0], want):
        raise RuntimeError("popcount probe computed a wrong result")
    timer = module.time_evaluator("popcount_probe", dev, number=number, repeat=repeat)
    seconds = min(min(timer(*args, out).results) for _ in range(rounds))
    return {"threads": threads, "bit_macs_per_s": bit_macs(threads, repeats) / seconds,
            "isa": isa_of(asm)}


def _reference(a: np.ndarray, b: np.ndarray, repeats: int) -> np.ndarray:
    """``acc[m, n, :]`` of one tile computed with numpy: pass ``r`` pairs row ``k`` of A
    with row ``(k + r) mod K`` of B, so passes differ only by a cyclic shift."""
    shifts = np.bincount(np.arange(repeats) % WORDS, minlength=WORDS).astype(np.uint64)
    out = np.zeros((TILE_M, TILE_N, LANES), np.uint64)
    for s in np.flatnonzero(shifts):
        x = a[:, None] ^ np.roll(b, -s, axis=1)[None]  # m, n, k, lane
        pop = np.unpackbits(x.view(np.uint8), axis=-1).reshape(*x.shape, 64).sum(-1)
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
    args = parser.parse_args(argv)
    from .peers import pin, prepare_threads

    prepare_threads(max(args.threads))
    for threads in args.threads:
        pin(threads)
        res = measure(threads, args.repeats)
        print(f"roofline: threads={threads} bit_macs_per_s={res['bit_macs_per_s']:.4g} "
              f"per_core={res['bit_macs_per_s'] / threads:.4g} isa={res['isa']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
