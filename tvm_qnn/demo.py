# SPDX-License-Identifier: Apache-2.0
"""The README's main job (``make demo``): compile the shipped quantized CNNs, measure them.

Default: the trained ``CNV_2W2A`` and ``CNV_1W1A`` of ``tvm_qnn/models`` (Fashion-MNIST,
trained with ``tvm_qnn.nn``) are compiled for this CPU and run over the 10 000 test images;
their accuracy is printed next to the float model ``CNV_FP32``'s, and their latency at 1 thread
and at the default thread count next to onnxruntime's (``CNV_FP32`` and the same QDQ model)
and TVM's own float compile. ``--target x86:<mcpu>`` compiles for another x86 class this CPU
can run (e.g. ``x86:haswell``: AVX2 code on an AVX-512 machine; the peers still use the
host's ISA). Without the shipped models or the data set (``make data``), or with
``--random``, a CNN with **random weights** is built instead, to check exactness and speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import numpy as np

from .runtime.threads import default_threads
from .runtime.timing import measure_seconds, time_call

MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def _shipped(name: str) -> str:
    return os.path.join(MODELS, f"{name}.onnx")


def _thread_counts() -> list[int]:
    """1 and the default (the physical cores, or ``TVM_NUM_THREADS``): each engine is timed
    at both, since on a tiny model one thread can win."""
    return sorted({1, default_threads()})


def _best(seconds_at) -> tuple[float, int]:
    """(seconds, threads) of the fastest of ``seconds_at(threads)`` over the thread counts."""
    times = {t: seconds_at(t) for t in _thread_counts()}
    threads = min(times, key=times.get)
    return times[threads], threads


def _ort_seconds(model, feeds: dict, threads: int) -> float:
    """onnxruntime (graph optimizations on) on ``threads`` threads, :func:`time_call`."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return time_call(lambda: sess.run(None, feeds))


def _artifact_seconds(art, x, threads: int) -> float:
    """A compiled model on ``threads`` threads: the same protocol as :func:`time_call`,
    each sample TVM's time evaluator (no Python overhead)."""
    estimate = art.benchmark(x, number=1, repeat=1, threads=threads)
    return measure_seconds(lambda number, repeat: art.benchmark(
        x, number=number, repeat=repeat, threads=threads), estimate)


def _qnn_seconds(model, target: str, x, threads: int, art) -> float:
    """tvm_qnn on ``threads`` threads, with code compiled for that many, as a user would
    (``art`` is the default compile, code for :func:`default_threads`; smaller layers go
    parallel only in code for several threads)."""
    import tvm_qnn

    if threads != default_threads():
        art = tvm_qnn.compile(model, target=target, threads=threads)
    return _artifact_seconds(art, x, threads)


def _timing_line() -> str:
    counts = " and ".join(str(t) for t in _thread_counts())
    return (f"batch 1, the better of {counts} thread(s) per engine, tvm_qnn compiled for each "
            "(min over 3 rounds of 5-sample medians)")


def _kernels(art) -> str:
    """The kernel families the model's layers got, e.g. ``lut x7, int8-dot x2``."""
    counts = Counter(layer["kernel"] for layer in art.layers if layer.get("kernel"))
    return ", ".join(f"{k} x{n}" for k, n in counts.items()) or "no bit-serial layer"


def _check_target(target: str) -> None:
    """The demo times ``target``'s code against the host's peers: it must run natively here
    (not another CPU's ISA, not arm code under an emulator)."""
    from tvm_qnn.target import resolve_target

    resolved = resolve_target(target)
    why = resolved.why_not_here()
    if why or resolved.name != "x86":
        raise SystemExit(f"demo: target {target!r} cannot run natively on this CPU"
                         f"{f' ({why})' if why else ''}; pick x86 or an x86:<mcpu> class it "
                         "has, e.g. x86:haswell")


def _row(label: str, times: dict[int, float]) -> str:
    return f"  {label:34s}" + "".join(f"{times[t] * 1e3:10.3f}" for t in _thread_counts())


def _ratios(label: str, ours: dict[int, float], peer: dict[int, float]) -> str:
    """The speed-up at each thread count, then best against best."""
    same = "".join(f"{peer[t] / ours[t]:9.2f}x" for t in _thread_counts())
    return f"  {label:34s}{same}   best/best x{min(peer.values()) / min(ours.values()):.2f}"


def trained_demo(images: int | None, target: str = "x86") -> int:
    """Compile the shipped trained CNVs for ``target``, run the Fashion-MNIST test set through
    them, and time them against onnxruntime (the float model and the same QDQ model) at each
    thread count."""
    import onnxruntime as ort
    import tvm

    import tvm_qnn
    from tvm_qnn.data import load_fashion_mnist

    x, y = load_fashion_mnist("test", unit=True)  # the shipped models take [0, 1] images
    if images:
        x, y = x[:images], y[:images]
    counts = _thread_counts()
    print(f"tvm_qnn demo: trained CNVs on Fashion-MNIST ({len(x)} test images), batch 1\n"
          f"latency: min over 3 rounds of 5-sample medians, at {' and '.join(map(str, counts))} "
          "thread(s); tvm_qnn compiled for each\n")
    fsess = ort.InferenceSession(_shipped("CNV_FP32"), providers=["CPUExecutionProvider"])
    name = fsess.get_inputs()[0].name
    f_acc = 100.0 * np.mean([np.argmax(fsess.run(None, {name: x[i:i + 1]})[0]) == y[i]
                             for i in range(len(x))])
    feeds = {name: x[:1]}
    ort_fp32 = {t: _ort_seconds(_shipped("CNV_FP32"), feeds, t) for t in counts}
    float_art = tvm_qnn.runtime.Artifact(
        tvm.compile(tvm.relax.frontend.onnx.from_onnx(
            __import__("onnx").load(_shipped("CNV_FP32"))),
            tvm.target.Target({"kind": "llvm", "num-cores": default_threads()})),
        [tvm_qnn.runtime.TensorInfo(name, (1, 1, 28, 28), "float32")], "llvm float", [])
    tvm_fp32 = {t: _artifact_seconds(float_art, x[:1], t) for t in counts}
    print(f"CNV_FP32  accuracy {f_acc:6.2f} %  (float, run by onnxruntime)")
    results = {}
    for model in ("CNV_2W2A", "CNV_1W1A"):
        art = tvm_qnn.compile(_shipped(model), target=target)
        correct = sum(int(np.argmax(art.run(x[i:i + 1])) == y[i]) for i in range(len(x)))
        acc = 100.0 * correct / len(x)
        print(f"{model}  accuracy {acc:6.2f} % ({acc - f_acc:+.2f})  kernels: {_kernels(art)}")
        results[model] = (acc, art.target,
                          {t: _qnn_seconds(_shipped(model), target, x[:1], t, art)
                           for t in counts},
                          {t: _ort_seconds(_shipped(model), feeds, t) for t in counts})
    print(f"\ntvm_qnn code: {results['CNV_2W2A'][1]}; the peers use this CPU's whole ISA\n")
    print(f"  {'latency, ms':34s}" + "".join(f"{f'{t}t':>10s}" for t in counts))
    print(_row("onnxruntime fp32 (CNV_FP32)", ort_fp32))
    print(_row("TVM fp32, default pipeline", tvm_fp32))
    for model, (_, _, ours, qdq) in results.items():
        print(_row(f"{model} tvm_qnn", ours))
        print(_row(f"{model} onnxruntime (same QDQ)", qdq))
    print(f"\n  {'tvm_qnn speed-up':34s}" + "".join(f"{f'{t}t':>10s}" for t in counts))
    for model, (_, _, ours, qdq) in results.items():
        print(_ratios(f"{model} vs onnxruntime fp32", ours, ort_fp32))
        print(_ratios(f"{model} vs onnxruntime QDQ", ours, qdq))
        print(_ratios(f"{model} vs TVM fp32", ours, tvm_fp32))
    print()
    for model, (acc, _, ours, qdq) in results.items():
        print(f"demo: model={model} accuracy={acc:.2f} float_accuracy={f_acc:.2f} "
              f"tvm_qnn_ms={min(ours.values()) * 1e3:.3f} tvm_qnn_1t_ms={ours[1] * 1e3:.3f} "
              f"ort_fp32_ms={min(ort_fp32.values()) * 1e3:.3f} "
              f"ort_fp32_1t_ms={ort_fp32[1] * 1e3:.3f} ort_qdq_ms={min(qdq.values()) * 1e3:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code (1 if the compiled model is not bit-exact)."""
    parser = argparse.ArgumentParser(prog="python -m tvm_qnn.demo", description=__doc__)
    parser.add_argument("--random", action="store_true",
                        help="the random-weight CNN instead of the shipped trained models")
    parser.add_argument("--bits", type=int, default=2, help="random CNN: bits of middle layers")
    parser.add_argument("--images", type=int, default=None,
                        help="test images (trained) / random inputs (default 32) to use")
    parser.add_argument("--target", default="x86",
                        help="x86 (this CPU, the default) or x86:<mcpu> for another class "
                             "this CPU can run, e.g. x86:haswell (AVX2)")
    args = parser.parse_args(argv)
    _check_target(args.target)
    if not args.random and all(os.path.exists(_shipped(m))
                               for m in ("CNV_FP32", "CNV_2W2A", "CNV_1W1A")):
        from tvm_qnn.data import fashion_mnist_dir
        from tvm_qnn.errors import TvmQnnError

        try:
            fashion_mnist_dir()
            return trained_demo(args.images, args.target)
        except TvmQnnError as err:
            print(f"({err}; running the random-weight demo instead)\n")
    args.images = args.images or 32

    import onnxruntime as ort
    import tvm

    import tvm_qnn
    from tvm_qnn.testing.float_model import float_twin
    from tvm_qnn.testing.onnx_models import make_cnn_model, random_input, run_onnxruntime

    print(f"tvm_qnn demo: a small CNN, W{args.bits}A{args.bits} middle layers, 8-bit first and "
          "last layers (QCDQ ONNX, as Brevitas exports it).")
    print("NOTE: the weights are RANDOM (no trained model ships yet): this checks exactness "
          "and speed, not accuracy.\n")
    model = make_cnn_model("qcdq", bits=args.bits)
    print(tvm_qnn.summary(model), "\n")

    start = time.perf_counter()
    art = tvm_qnn.compile(model, target=args.target)
    print(f"compiled for {art.target} in {time.perf_counter() - start:.1f} s\n")

    name = art.inputs[0].name
    exact = agree = 0
    fmodel = float_twin(model)
    fsess = ort.InferenceSession(fmodel.SerializeToString(), providers=["CPUExecutionProvider"])
    for i in range(args.images):
        feeds = random_input(model, seed=i)
        got = art.run(feeds[name])
        want = run_onnxruntime(model, feeds)[0]
        exact += int(np.array_equal(got, want))
        fout = fsess.run(None, feeds)[0]
        agree += int(np.argmax(got) == np.argmax(fout))
    print(f"bit-exact vs onnxruntime (graph optimizations off): {exact}/{args.images} inputs")
    print(f"top-1 agreement with the float model:               {agree}/{args.images} inputs "
          "(random weights)\n")

    feeds = random_input(model, seed=0)
    x = feeds[name]
    t_qnn, n_qnn = _best(lambda t: _qnn_seconds(model, args.target, x, t, art))
    t_ort, n_ort = _best(lambda t: _ort_seconds(fmodel.SerializeToString(), feeds, t))
    t_ort_q, n_ort_q = _best(lambda t: _ort_seconds(model.SerializeToString(), feeds, t))
    float_mod = tvm.relax.frontend.onnx.from_onnx(fmodel)
    tvm_float = tvm_qnn.runtime.Artifact(
        tvm.compile(float_mod, tvm.target.Target({"kind": "llvm",
                                                  "num-cores": default_threads()})),
        art.inputs, "llvm float", [])
    t_tvm, n_tvm = _best(lambda t: _artifact_seconds(tvm_float, x, t))
    print(f"latency, {_timing_line()}:")
    print(f"  tvm_qnn                     {t_qnn * 1e3:8.3f} ms ({n_qnn}t)   "
          f"[{_kernels(art)}]")
    print(f"  onnxruntime float (fp32)    {t_ort * 1e3:8.3f} ms ({n_ort}t)   "
          f"x{t_ort / t_qnn:.2f}")
    print(f"  onnxruntime QCDQ model      {t_ort_q * 1e3:8.3f} ms ({n_ort_q}t)   "
          f"x{t_ort_q / t_qnn:.2f}")
    print(f"  TVM float, default pipeline {t_tvm * 1e3:8.3f} ms ({n_tvm}t)   "
          f"x{t_tvm / t_qnn:.2f}")
    print(f"\ndemo: bitexact={exact}/{args.images} tvm_qnn_ms={t_qnn * 1e3:.3f} "
          f"ort_fp32_ms={t_ort * 1e3:.3f} tvm_fp32_ms={t_tvm * 1e3:.3f}")
    return 0 if exact == args.images else 1


if __name__ == "__main__":
    sys.exit(main())
