# SPDX-License-Identifier: Apache-2.0
"""Tuned vs default template on the layer suite, and what tuning and a database hit cost.

    python -m bench.bench_tuning [--layers conv56 conv28 conv14 conv7] [--bits 1x1 2x2]
                                 [--trials 64] [--json out.json] [--work-dir DIR]
                                 [--mcpu haswell]

Each suite conv becomes a one-layer QCDQ ONNX model (``A``-bit ReLU output), tuned on this CPU
by :func:`tvm_qnn.tune` into a fresh database. One line per case::

    bench: tune layer=conv56 bits=W1A1 target=x86 family_cost_model=… family_tuned=…
           families_ms=bit-serial:…,int8-dot:… trials=64 tune_s=… default_ms=… tuned_ms=…
           speedup=… compile_s=… compile_with_db_s=… roofline_ms=… headroom=…

``family_cost_model`` is the kernel family ``compile`` gives the layer untuned,
``family_tuned`` the one tuning chose, ``families_ms`` each family's best tuned kernel (where
the target has several that fit the layer).

``default_ms`` / ``tuned_ms`` are the layer kernel with the default template and with the record
``compile`` uses, both timed the same way (:func:`tvm_qnn.tune_report`), medians of 5 rounds;
``default_kept`` says no record beat the default by ``tvm_qnn.tuning.choice.MIN_GAIN``, so
``compile`` keeps the default template and ``tuned_ms`` is its time;
``tune_s`` is the wall time of the whole tuning run (default template, search, builds,
measurements); ``compile_s`` and
``compile_with_db_s`` are ``tvm_qnn.compile`` without schedules and with the database: a hit
costs a trace replay, no tuning. ``roofline_ms`` is the layer's bit-MACs at the popcount
probe's peak (:mod:`bench.roofline`) and ``headroom = default_ms / roofline_ms`` the most any
schedule could gain over the default. Kernels run on one thread (``TVM_NUM_THREADS=1``),
tuned and timed alike; builds use every core. Run nothing else meanwhile. ``--mcpu`` tunes the
code of another x86 class that runs here (``haswell``: AVX2), the roofline probe included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from tvm_qnn.testing.suite import LAYER_SUITE
from tvm_qnn.tuning.families import read_kernel_families

from . import peers, roofline
from .bench_layers import bench_line, parse_bits
from .peers import layer_macs

ROUNDS = 5
THREADS = 1  # the kernels' threads: the figure of issue 9's 1-thread targets


def _model(name: str, wbits: int, abits: int):
    from tvm_qnn.testing.onnx_models import make_conv_model

    _, cin, cout, size = LAYER_SUITE[name]
    return make_conv_model("qcdq", in_ch=cin, out_ch=cout, size=(size, size), act_bits=abits,
                           weight_bits=wbits, relu=True)


def _conv_signature(model) -> str:
    """The signature of the one conv of ``model`` (the key of its kernel-family choice)."""
    from tvm_qnn.frontend import load_model
    from tvm_qnn.transform import find_layers

    (match,) = [m for m in find_layers(load_model(model)["main"]) if m.kind == "conv2d"]
    return match.layer.signature


def bench_case(name: str, wbits: int, abits: int, trials: int,
               keep_in: str | None = None, rate: float | None = None,
               target: str = "x86") -> dict:
    """Tune one suite conv; the row of figures described in the module docstring.

    ``keep_in``: tune into this database folder (kept, e.g. a ``schedules/`` folder to ship)
    instead of a temporary one; the layer must not be in it yet, or ``tune_s`` would not be
    the cost of tuning it. ``target``: ``x86`` or ``x86:<mcpu>``.
    """
    import tvm_qnn

    model = _model(name, wbits, abits)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = keep_in or tmp
        if keep_in and os.path.isdir(keep_in) and any(
                r.trials for r in tvm_qnn.tune_report(model, target, keep_in, time_kernels=False)):
            raise SystemExit(f"{keep_in} already has records of {name} W{wbits}A{abits}: "
                             "its tuning time would not be measured")
        start = time.perf_counter()
        tvm_qnn.tune(model, target, trials=trials, work_dir=work, seed=0)
        tune_s = time.perf_counter() - start
        # The kernel family tuning chose for this conv (the folder may hold other layers'),
        # with each family's best time, and the cost model's.
        choice = read_kernel_families(work).get(_conv_signature(model))
        families = ",".join(f"{f}:{ms:.3g}" for f, ms in choice.times_ms) if choice else ""
        rows, compile_s, compile_db_s, cost_model = [], [], [], None
        for _ in range(ROUNDS):  # the machine is shared: medians of rounds, each timing both
            (row,) = [r for r in tvm_qnn.tune_report(model, target, work) if r.kind == "conv2d"]
            rows.append(row)
            os.environ["TVM_QNN_SCHEDULES"] = "off"
            try:
                start = time.perf_counter()
                art = tvm_qnn.compile(model, target)
                compile_s.append(time.perf_counter() - start)
                cost_model = next(ly["kernel"] for ly in art.layers if ly["kind"] == "conv2d")
                start = time.perf_counter()
                tvm_qnn.compile(model, target, tuning_db=work)
                compile_db_s.append(time.perf_counter() - start)
            finally:
                del os.environ["TVM_QNN_SCHEDULES"]
    default_ms = statistics.median(r.default_ms for r in rows)
    tuned_ms = statistics.median(r.best_ms for r in rows)
    row = dict(layer=name, bits=f"W{wbits}A{abits}", target=target,
               family_cost_model=cost_model,
               family_tuned=choice.family if choice else cost_model,
               families_ms=families or None, trials=rows[0].trials, tune_s=tune_s,
               default_ms=default_ms, tuned_ms=tuned_ms, speedup=default_ms / tuned_ms,
               default_kept=rows[0].kept_default,
               compile_s=statistics.median(compile_s),
               compile_with_db_s=statistics.median(compile_db_s))
    if rate:
        kind, cin, cout, size = LAYER_SUITE[name]
        row["roofline_ms"] = 1e3 * wbits * abits * layer_macs(kind, cin, cout, size) / rate
        row["headroom"] = default_ms / row["roofline_ms"]
    return row


def main(argv=None) -> int:
    """Run the cases; print one ``bench: tune`` line each."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_tuning",
                                     description=__doc__.split("\n")[0])
    convs = [n for n, spec in LAYER_SUITE.items() if spec[0] == "conv2d"]
    parser.add_argument("--layers", nargs="+", default=convs, choices=convs)
    parser.add_argument("--bits", type=parse_bits, nargs="+", default=["1x1", "2x2"])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--work-dir", help="tune into this database folder and keep it "
                        "(default: a temporary folder per case)")
    parser.add_argument("--mcpu", help="tune the code of this x86 CPU (it must run here), "
                        "e.g. haswell for the AVX2 class")
    args = parser.parse_args(argv)
    target = f"x86:{args.mcpu}" if args.mcpu else "x86"
    # Kernels are tuned and timed on THREADS threads (the runner's worker processes inherit
    # TVM_NUM_THREADS); the roofline is measured pinned to that many cores. Builds still use
    # every core.
    os.environ["TVM_NUM_THREADS"] = str(THREADS)
    with peers.thread_control(THREADS):  # restores TVM_NUM_THREADS as set here
        peers.pin(THREADS)
        probe = roofline.measure(THREADS, target=target)
    print(f"bench: roofline threads={probe['threads']} "
          f"bit_macs_per_s={probe['bit_macs_per_s']:.4g} isa={probe['isa']} "
          f"word_bits={probe['word_bits']}", flush=True)
    rows = []
    for name in args.layers:
        for bits in args.bits:
            wbits, abits = parse_bits(bits) if isinstance(bits, str) else bits
            row = bench_case(name, wbits, abits, args.trials, args.work_dir,
                             probe["bit_macs_per_s"], target)
            rows.append(row)
            print("bench: tune " + bench_line(row).removeprefix("bench: "), flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        tmp = args.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
