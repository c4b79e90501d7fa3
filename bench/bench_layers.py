# SPDX-License-Identifier: Apache-2.0
"""The x86 benchmark suite: tvm_qnn layers and models next to their peers, in one run.

    python -m bench [--layers conv56 … dense64] [--bits 1x1 2x2 1x2] [--threads 1 2]
                    [--models [CNV_1W1A CNV_2W2A]] [--brevitas [cnv_1w1a …]]
                    [--json out.json] [--png out.png]
                    [--mcpu haswell]

``--mcpu`` generates the code (and the roofline probe) for another x86 CPU that runs here,
e.g. ``haswell`` for the AVX2 path (``vpshufb`` popcount, 8 output channels per vector), and
limits the peers to that CPU's instruction sets (:mod:`bench.peer_isa`: PyTorch's ATen, oneDNN,
fbgemm and MKL by their variables, onnxruntime by masking CPUID where the CPU has CPUID
faulting), checked before anything is timed and recorded in the JSON (``machine.peer_isa``)
and in each row (``torch_isa``, ``ort_isa``: ``host`` where onnxruntime could not be limited).

**Layers** (batch 1): conv3x3 s1 p1 at 56²×64→64, 28²×128→128, 14²×256→256, 7²×512→512 and
dense 1×4096→4096, 64×4096→4096, at each ``--bits`` ``WxA`` (weight × activation bits; a
single ``N`` means ``NxN``) and each ``--threads`` count. One line per case::

    bench: layer=conv7 bits=W1A1 threads=1 tvm_qnn_ms=… torch_fp32_ms=… torch_int8_ms=…
           ort_int8_ms=… roofline_ms=… of_roofline=… x_fp32=… x_int8=… int8_engine=…
           ort_op=… isa=vpopcntq zmm

``tvm_qnn_ms`` is the whole layer as it runs inside a network of such layers, timed by TVM's
``time_evaluator``: for a conv, the vector pack of the previous layer's channels-last codes
into bit-planes, the xor/popcount branches and the fused requantize epilogue writing
``A``-bit codes channels-last (:class:`tvm_qnn.testing.layers.ChainedLayerKernel`, what
``tvm_qnn.compile`` emits between two bit-serial convs); ``alone_ms`` is the same conv as a
network's first bit-serial layer (NCHW codes in, the scalar pack inside the kernel, NCHW
codes out). A dense layer reads uint8 codes and writes uint8 codes. The peers (:mod:`bench.peers`)
are PyTorch fp32, PyTorch int8 (the fastest
of its quantized engines, named in ``int8_engine``) and onnxruntime int8 (QDQ model fused into
the op named in ``ort_op``). ``roofline_ms = W·A × MACs / rate`` with the peak rate of the
popcount probe (:mod:`bench.roofline`, its fastest sample) at that thread count;
``of_roofline = roofline_ms / tvm_qnn_ms`` (1.0 = at the roofline); ``x_fp32`` and ``x_int8``
are speed-ups over PyTorch fp32 and over the faster int8 peer (> 1: tvm_qnn is faster).
``isa`` is the popcount instruction found in the kernel's generated assembly.

**Models** (``--models``, default all shipped quantized CNVs): the trained models of
``tvm_qnn/models`` compiled by :func:`tvm_qnn.compile` (``Artifact.benchmark``), next to
onnxruntime on the same QDQ model (fused by full optimization) and the float ``CNV_FP32`` run
by onnxruntime and by PyTorch (its weights loaded from the ONNX file). One ``bench:
model=…`` line each. ``--brevitas``: Brevitas' example networks, see
:mod:`bench.brevitas_models`.

Each ``--threads`` count runs in a process of its own (results merged). Every measurement:
threads pinned to the first ``threads`` CPUs (:func:`bench.peers.pin`),
warm-up, then the minimum over rounds of the median of each round's samples (the quietest
round: the cores are shared); see :mod:`bench.peers`. ``--json`` writes everything measured
(including each PyTorch engine's time), ``--png`` a bar chart of the speed-ups per layer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import sys
import time

from tvm_qnn.testing.suite import LAYER_SUITE as LAYERS

from . import brevitas_models, peer_isa, peers, roofline
from .chart import plot

# Small layers for the smoke test (``--quick``); not part of the suite.
QUICK_LAYERS = {
    "conv8q": ("conv2d", 64, 64, 8),
    "dense4q": ("dense", 512, 512, 4),
}
MODELS = ("CNV_1W1A", "CNV_2W2A")
MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "tvm_qnn", "models")


def parse_bits(text: str) -> tuple[int, int]:
    """``"1x2"`` → (weight bits 1, activation bits 2); ``"2"`` → (2, 2)."""
    m = re.fullmatch(r"([1-8])(?:x([1-8]))?", text.strip().lower().replace("w", "")
                     .replace("a", "x"))
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: bits are WxA (e.g. 1x1, 2x2, 1x2) or N")
    w = int(m.group(1))
    return w, int(m.group(2) or w)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "nan"
    return str(value)


def bench_line(row: dict) -> str:
    """The greppable ``bench:`` line of a result row (``isa`` last: its value has a space)."""
    keys = [k for k in row if k != "isa" and not isinstance(row[k], dict)]
    text = "bench: " + " ".join(f"{k}={_fmt(row[k])}" for k in keys)
    return text + (f" isa={row['isa']}" if "isa" in row else "")


def _qnn_kernel(kind, cin, cout, size, wbits, abits, target="x86"):
    """(kernel as timed, input codes, ISA, the conv alone or None): the kernel family the
    target's cost model picks; a conv as inside a chain of them (the previous layer's codes
    channels-last: packed into bit-planes for a bit-serial or table-lookup one, read as they
    are by an int8-dot one)."""
    import numpy as np

    from tvm_qnn.target import resolve_target
    from tvm_qnn.testing.layers import ChainedLayerKernel, LayerKernel, random_layer
    from tvm_qnn.topi.dense_dot8 import dense_as_conv, plan_kernel
    from tvm_qnn.topi.layout import FORCED_LUT_WEIGHT_BITS

    if kind == "conv2d":  # A-bit codes out, as the next layer of the network reads them
        layer, xq = random_layer(kind, act_bits=abits, weight_bits=wbits, in_channels=cin,
                                 out_channels=cout, size=(size, size), out_bits=abits)
    else:
        layer, xq = random_layer(kind, act_bits=abits, weight_bits=wbits, in_channels=cin,
                                 out_channels=cout, batch=size)
    layout = resolve_target(target).layout
    family = plan_kernel(layer, layout).kernel
    if kind == "dense" and family in ("int8-dot", "lut"):
        # The compiler runs it as 1x1 convs over the rows (topi.dense_dot8), between two
        # transposes of the rows (not timed: 0.3 MB at 64 rows).
        layer, xq = dense_as_conv(layer), np.ascontiguousarray(xq.T)[None, :, None, :]
    lut = FORCED_LUT_WEIGHT_BITS if family == "lut" else None
    alone = LayerKernel(layer, target=target, dot8_min_branches=layout.dot8_min_branches,
                        lut_max_weight_bits=lut)
    isa = roofline.isa_of(alone.module.inspect_source("asm"))
    if kind == "conv2d" and layer.kind == "conv2d":
        chained = ChainedLayerKernel(layer, target=target,
                                     dot8_min_branches=layout.dot8_min_branches,
                                     lut_max_weight_bits=lut)
        return chained, xq, isa, alone
    return alone, xq, isa, None


def _qnn_ms(kernel, xq, timing: peers.Timing) -> float:
    kernel(xq)  # warm-up
    start = time.perf_counter()
    kernel(xq)
    estimate = time.perf_counter() - start
    return peers.measure_ms(lambda number, repeat: kernel.time(xq, number=number, repeat=repeat),
                            estimate, timing)


def bench_layers(names, bits, threads, rates, timing, target="x86",
                 engines=peers.TORCH_ENGINES, tags=None) -> list[dict]:
    """Every (layer, bits, threads) case; peers measured once per (layer, threads), PyTorch int8
    under ``engines``. ``tags`` are added to every row (e.g. the ISA the peers were limited to)."""
    from tvm_qnn.target import resolve_target

    rows = []
    for name in names:
        kind, cin, cout, size = {**LAYERS, **QUICK_LAYERS}[name]
        macs = peers.layer_macs(kind, cin, cout, size)
        int8 = peers.int8_layer(kind, cin, cout, size)
        peer = {}
        for n in threads:
            peers.pin(n)
            t8, engine, engine_ms = peers.torch_int8_ms(int8, timing, engines)
            ort_ms, ort_op = peers.ort_int8_ms(int8, n, timing)
            peer[n] = dict(torch_fp32_ms=peers.torch_fp32_ms(kind, cin, cout, size, timing),
                           torch_int8_ms=t8, ort_int8_ms=ort_ms, engine=engine,
                           engines=engine_ms, ort_op=ort_op)
        for wbits, abits in bits:
            for n in threads:
                # Code for n threads (with several, smaller layers go parallel too).
                peers.pin(max(threads))  # compile with every core the run may use
                kernel, xq, isa, alone = _qnn_kernel(
                    kind, cin, cout, size, wbits, abits,
                    resolve_target(target).for_threads(n))
                peers.pin(n)
                qnn_ms = _qnn_ms(kernel, xq, timing)
                extra = {} if alone is None else dict(alone_ms=_qnn_ms(alone, xq, timing))
                p = peer[n]
                roof_ms = 1e3 * wbits * abits * macs / rates[n]
                int8_ms = min(p["torch_int8_ms"], p["ort_int8_ms"])
                # The engine x_int8 is against: onnxruntime's when it beat PyTorch's best.
                engine = f"torch:{p['engine']}" if p["torch_int8_ms"] <= p["ort_int8_ms"] \
                    else f"onnxruntime:{p['ort_op']}"
                row = dict(layer=name, bits=f"W{wbits}A{abits}", threads=n, tvm_qnn_ms=qnn_ms,
                           torch_fp32_ms=p["torch_fp32_ms"], torch_int8_ms=p["torch_int8_ms"],
                           ort_int8_ms=p["ort_int8_ms"], roofline_ms=roof_ms,
                           of_roofline=roof_ms / qnn_ms, x_fp32=p["torch_fp32_ms"] / qnn_ms,
                           x_int8=int8_ms / qnn_ms, int8_engine=engine,
                           ort_op=p["ort_op"], **extra, torch_int8_engines_ms=p["engines"],
                           kernel=kernel.plan.kernel, **(tags or {}), isa=isa)
                rows.append(row)
                print(bench_line(row), flush=True)
    return rows


def bench_models(names, threads, timing, target="x86", tags=None) -> list[dict]:
    """The shipped CNVs compiled by tvm_qnn vs onnxruntime (QDQ and fp32) and PyTorch fp32."""
    import numpy as np

    import tvm_qnn

    fp32_path = os.path.join(MODEL_DIR, "CNV_FP32.onnx")
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    rows = []
    peers.pin(max(threads))
    # Code for each thread count: with several, smaller layers go parallel too.
    arts = {(name, n): tvm_qnn.compile(os.path.join(MODEL_DIR, f"{name}.onnx"), target=target,
                                       threads=n)
            for name in names for n in threads}
    import torch

    torch_fp32 = peers.torch_cnv_fp32(fp32_path)
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    for n in threads:
        peers.pin(n)
        sess, _ = peers.ort_session(fp32_path, n)
        feeds = {sess.get_inputs()[0].name: x}
        ort_fp32_ms = peers.ort_time_ms(sess, feeds, timing)
        with torch.no_grad():
            agree = bool(np.allclose(torch_fp32(xt).numpy(), sess.run(None, feeds)[0],
                                     rtol=1e-3, atol=1e-3))
        if not agree:
            print("bench: WARNING PyTorch CNV_FP32 disagrees with onnxruntime", flush=True)
        torch_fp32_ms = peers.torch_module_ms(torch_fp32, xt, timing)
        for name in names:
            art = arts[(name, n)]
            path = os.path.join(MODEL_DIR, f"{name}.onnx")
            # threads=n: an artifact sizes TVM's pool itself (its default is every core).
            est = art.benchmark(x, number=1, repeat=1, threads=n)
            qnn_ms = peers.measure_ms(
                lambda number, repeat, a=art, n=n: a.benchmark(x, number=number,
                                                               repeat=repeat, threads=n),
                est, timing)
            try:
                qsess, qops = peers.ort_session(path, n)
                ort_qdq_ms = peers.ort_time_ms(qsess, feeds, timing)
                qconv = sum(op == "QLinearConv" for op in qops)
            except Exception as err:  # noqa: BLE001 - the peer may not run the model at all
                print(f"bench: onnxruntime cannot run {name}: {err}", flush=True)
                ort_qdq_ms, qconv = float("nan"), 0
            bitserial = sum(1 for r in art.layers if r.get("bitserial"))
            row = dict(model=name, threads=n, tvm_qnn_ms=qnn_ms, ort_qdq_ms=ort_qdq_ms,
                       ort_fp32_ms=ort_fp32_ms, torch_fp32_ms=torch_fp32_ms,
                       x_ort_qdq=ort_qdq_ms / qnn_ms, x_ort_fp32=ort_fp32_ms / qnn_ms,
                       x_torch_fp32=torch_fp32_ms / qnn_ms,
                       bitserial_layers=f"{bitserial}/{len(art.layers)}",
                       ort_qlinearconv=qconv, torch_fp32_matches_ort=agree, **(tags or {}))
            rows.append(row)
            print(bench_line(row), flush=True)
    return rows


def main(argv=None) -> int:
    """Run the suite (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--layers", nargs="*", default=list(LAYERS),
                        choices=[*LAYERS, *QUICK_LAYERS], metavar="LAYER",
                        help=f"layers of the suite: {' '.join(LAYERS)} (none: models only)")
    parser.add_argument("--bits", type=parse_bits, nargs="+", default=["1x1", "2x2", "1x2"],
                        metavar="WxA", help="weight x activation bits (default 1x1 2x2 1x2)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--models", nargs="*", choices=MODELS, metavar="MODEL",
                        help=f"also the shipped models (no names: {' '.join(MODELS)})")
    parser.add_argument("--brevitas", nargs="*", metavar="NAME",
                        help="also Brevitas' example networks exported to QONNX "
                        f"(no names: {' '.join(brevitas_models.DEFAULT)})")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--png", help="write a bar chart of the speed-ups here")
    parser.add_argument("--mcpu", help="generate code for this x86 CPU instead of the host's "
                        "(e.g. haswell: the AVX2 vpshufb popcount path; it must run here)")
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.bits = [parse_bits(b) if isinstance(b, str) else b for b in args.bits]
    if len(args.threads) > 1:
        return _each_thread_count_alone(args)
    timing = peers.QUICK if args.quick else peers.Timing()
    limits = peer_isa.peer_limits(args.mcpu) if args.mcpu else None
    if limits and not peer_isa.apply(limits):  # PyTorch came first: its ISA may be fixed
        return peer_isa.rerun_in_fresh_process(argv, limits)
    with peers.thread_control(max(args.threads)):
        return _run(args, timing, limits)


def _run(args, timing, limits) -> int:
    from tvm_qnn.target import X86Target

    start = time.perf_counter()
    target = X86Target(mcpu=args.mcpu) if args.mcpu else "x86"
    engines, tags, peer_record = peers.TORCH_ENGINES, {}, "host (no --mcpu: not limited)"
    if limits:
        peer_isa.limit_onnxruntime(limits)
        peer_record = peer_isa.verify(limits)
        print(f"bench: {peer_isa.describe(peer_record)}", flush=True)
        ort_isa = "host" if peer_isa.ort_limit() else limits.onednn
        engines, tags = limits.torch_engines, dict(torch_isa=limits.onednn, ort_isa=ort_isa)
    rates = {}
    for n in args.threads:
        peers.pin(n)
        probe = (roofline.measure(n, repeats=500, rounds=1, repeat=2, target=target)
                 if args.quick else roofline.measure(n, target=target))
        rates[n] = probe["bit_macs_per_s"]
        print(f"bench: roofline threads={n} bit_macs_per_s={rates[n]:.4g} "
              f"per_core={rates[n] / n:.4g} isa={probe['isa']}", flush=True)
    rows = bench_layers(args.layers, args.bits, args.threads, rates, timing, target, engines,
                        tags)
    model_rows = []
    if args.models is not None:
        model_rows = bench_models(args.models or list(MODELS), args.threads, timing, target,
                                  tags)
    brevitas_rows = []
    if args.brevitas is not None:
        def report(row):
            row.update({k: v for k, v in tags.items() if k == "ort_isa"})  # its only peer
            print(bench_line(row), flush=True)

        brevitas_rows = brevitas_models.bench_brevitas(
            args.brevitas or list(brevitas_models.DEFAULT), args.threads, timing, rates,
            report, target)
    elapsed = time.perf_counter() - start
    print(f"bench: done in {elapsed:.1f} s", flush=True)
    result = dict(machine=dict(cpu=_cpu_name(), cpus=len(peers.CPUS),
                               python=platform.python_version(),
                               mcpu=args.mcpu or "host", peer_isa=peer_record),
                  timing=dataclasses.asdict(timing),
                  roofline_bit_macs_per_s={str(k): v for k, v in rates.items()},
                  layers=rows, models=model_rows, brevitas=brevitas_rows,
                  seconds=elapsed)
    return _write_results(result, args)


def _write_results(result: dict, args) -> int:
    """``--json`` (everything measured) and ``--png`` (the layers' speed-ups)."""
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    if args.png and result["layers"]:
        plot(result["layers"], args.png)
    return 0


def _each_thread_count_alone(args) -> int:
    """Several ``--threads``: one fresh process per count, results merged. In one process the
    1-thread figures of a ``--threads 1 2`` run came out 1.3-1.5x slower for every engine than
    a ``--threads 1`` run's (CNV_1W1A 0.108 against 0.074 ms, onnxruntime QDQ 0.47 against
    0.39; Zen 4): the pools sized for 2 threads leave threads that compete on the pinned CPU."""
    import subprocess
    import tempfile

    child = ["--bits", *(f"{w}x{a}" for w, a in args.bits)]
    for flag, value in (("--layers", args.layers), ("--models", args.models),
                        ("--brevitas", args.brevitas)):
        if value is not None:
            child += [flag, *value]
    child += ["--mcpu", args.mcpu] if args.mcpu else []
    child += ["--quick"] if args.quick else []
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.threads:
            out = os.path.join(tmp, f"{n}.json")
            code = subprocess.call([sys.executable, "-m", "bench", *child, "--threads", str(n),
                                    "--json", out], env=peer_isa.child_env())
            if code:
                return code
            with open(out, encoding="utf-8") as f:
                parts.append(json.load(f))
    merged = dict(parts[0], seconds=sum(p["seconds"] for p in parts),
                  roofline_bit_macs_per_s={k: v for p in parts
                                           for k, v in p["roofline_bit_macs_per_s"].items()})
    for key in ("layers", "models", "brevitas"):
        merged[key] = [row for p in parts for row in p[key]]
    return _write_results(merged, args)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
