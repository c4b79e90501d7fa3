# SPDX-License-Identifier: Apache-2.0
"""Where a bit-serial layer's time goes: the whole layer and its parts, each timed alone.

    python -m bench.profile_layer conv56 --bits 1      (pin it: taskset -c 1 ...)

Prints the whole layer as compiled, the activation packing alone, and the requantize epilogue
alone from precomputed branch sums, writing NCHW (what the layer writes) and channels-last (what
a layout change between layers would allow). One pinned thread; medians of 5 × 50 calls.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def _median_ms(func, args) -> float:
    import tvm

    timer = func.time_evaluator(func.entry_name, tvm.cpu(), number=50, repeat=5)
    return float(np.median(timer(*args).results)) * 1e3


def main(argv=None) -> int:
    """Print one ``profile:`` line for the layer."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("layer", choices=["conv56", "conv28", "conv14", "conv7"])
    parser.add_argument("--bits", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    import tvm
    from tvm import s_tir, te

    from tvm_qnn.target import X86Target
    from tvm_qnn.target.cpu.schedule import _schedule_producers
    from tvm_qnn.testing.layers import LayerKernel
    from tvm_qnn.testing.suite import suite_layer
    from tvm_qnn.topi.bitpack import pack_bitplanes_nchw
    from tvm_qnn.topi.epilogue import conv_epilogue

    backend, dev = X86Target(), tvm.cpu()
    layer, xq = suite_layer(args.layer, args.bits, args.bits)
    kernel = LayerKernel(layer, target=backend)
    plan, epi = kernel.plan, kernel.plan.epilogue
    whole = min(kernel.time(xq, 50, 5) for _ in range(3)) * 1e3

    data = te.placeholder(layer.input_shape, layer.input_dtype, "data")
    packed = pack_bitplanes_nchw(data, layer.act_lo, layer.act_bits, 1, layer.pads,
                                 plan.pad_code)
    sch = s_tir.Schedule(te.create_prim_func([data, packed]))
    _schedule_producers(sch, backend.schedule_config)
    pack = tvm.compile(sch.mod["main"], backend.tvm_target).mod
    pack_ms = _median_ms(pack, [tvm.runtime.tensor(xq, dev), tvm.runtime.tensor(
        np.zeros([int(s) for s in packed.shape], "uint64"), dev)])

    _, oc, oh, ow = layer.output_shape
    inner = plan.oc_block
    p = te.placeholder((1, oc // inner, oh, ow, inner), "uint64", "p")
    params = [te.placeholder(a.shape, str(a.dtype), n) for n, a in epi.tensor_params()]
    epilogue_ms = {}
    for layout, shape in (("nchw", (1, oc, oh, ow)), ("nhwc", (1, oh, ow, oc))):
        # The layer's own epilogue block, its Su term left out: P → output alone.
        out = conv_epilogue(p, None, epi, params, oc, 1, channels_last=layout == "nhwc")
        sch = s_tir.Schedule(te.create_prim_func([p, *params, out]))
        loops = sch.get_loops(sch.get_sblock("epilogue"))
        k = 1 if layout == "nchw" else 3  # the channel loop: vectorized, as the layer does
        rest = loops[:k] + loops[k + 1:]
        co, ci = sch.split(loops[k], [None, inner])
        sch.reorder(rest[0], co, *rest[1:], ci)
        sch.vectorize(ci)
        func = tvm.compile(sch.mod["main"], backend.tvm_target).mod
        call = [tvm.runtime.tensor(np.random.default_rng(0).integers(
            0, 100, [int(s) for s in p.shape]).astype("uint64"), dev)]
        call += [tvm.runtime.tensor(a, dev) for _, a in epi.tensor_params()]
        call += [tvm.runtime.tensor(np.zeros(shape, layer.output.out_dtype), dev)]
        epilogue_ms[layout] = _median_ms(func, call)
    print(f"profile: layer={args.layer} bits=W{args.bits}A{args.bits} whole_ms={whole:.4f} "
          f"pack_ms={pack_ms:.4f} epilogue_nchw_ms={epilogue_ms['nchw']:.4f} "
          f"epilogue_nhwc_ms={epilogue_ms['nhwc']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
