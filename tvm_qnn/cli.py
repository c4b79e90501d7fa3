# SPDX-License-Identifier: Apache-2.0
"""``tvm-qnn``: the command line.

    tvm-qnn summary MODEL                       per-layer table
    tvm-qnn compile MODEL --target x86 -o m.so  compile and export a shared library
    tvm-qnn train --precision w2a2 ...          quantization-aware training (python -m
                                                tvm_qnn.train --help for the options)
    tvm-qnn device start --target arm_cpu       an RPC device (tracker + emulated board)
    tvm-qnn tune MODEL --target x86 --trials 64 --work-dir db   tune, then
                                                `tvm-qnn compile MODEL --tuning-db db`
    tvm-qnn bench --target arm_cpu:rasp4b       the benchmark suite (x86: measured against
                                                PyTorch; arm_cpu: the llvm-mca model)
    tvm-qnn sim [MODEL] [--config cfg.json]     the accelerator's cycle model per layer (the
                                                layer suite, or a model's layers)
    tvm-qnn profile MODEL --target x86          where a compiled model's time goes, function
                                                by function
    tvm-qnn demo                                the README's main job

Each command ends with one line a script can grep (``summary:``, ``compiled:``); ``-v`` shows
the compiler's log (which layers went bit-serial and why others did not).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import cli_args
from .errors import TvmQnnError


def _shapes(items: list[tuple[str, tuple[int, ...]]] | None) -> dict | None:
    """The ``--shape`` arguments (parsed by :func:`cli_args.shape_spec`) as a dict."""
    return dict(items) if items else None


def _add_shape_option(parser) -> None:
    parser.add_argument("--shape", action="append", metavar="NAME=D0,D1,...",
                        type=cli_args.shape_spec,
                        help="static shape of an input with symbolic dimensions")


def _cmd_summary(args) -> int:
    from .summary import summary

    s = summary(args.model, shapes=_shapes(args.shape), target=args.target,
                tuning_db=args.tuning_db)
    print(s)
    n = sum(1 for r in s.rows if r["bitserial"])
    print(f"summary: {n}/{len(s.rows)} layers bit-serial, BOPs {s.bops}")
    return 0


def _cmd_compile(args) -> int:
    from .compiler import compile as qnn_compile

    start = time.perf_counter()
    art = qnn_compile(args.model, target=args.target, shapes=_shapes(args.shape),
                      tuning_db=args.tuning_db, threads=args.threads)
    art.export_library(args.output)
    n = sum(1 for r in art.layers if r["bitserial"])
    print(f"compiled: {args.output} target={art.target} bitserial_layers={n}/{len(art.layers)} "
          f"seconds={time.perf_counter() - start:.1f}")
    return 0


def _cmd_tune(args) -> int:
    from .tuning import tune, tune_report

    start = time.perf_counter()
    result = tune(args.model, target=args.target, trials=args.trials, work_dir=args.work_dir,
                  runner=args.runner, timeout=args.timeout, shapes=_shapes(args.shape))
    if isinstance(result, dict):  # the accelerator: tilings scored by the simulator
        print(f"{'layer':<24} {'rows':>4} {'group':>5} {'trials':>6} {'cycles':>9} "
              f"{'default':>9} {'speed-up':>8}")
        for name, r in result.items():
            print(f"{name:<24} {r['rows'] or '-':>4} {r['group_blocks'] or '-':>5} "
                  f"{r['trials']:>6} {r['cycles']:>9} {r['default_cycles']:>9} "
                  f"{r['default_cycles'] / r['cycles']:>8.2f}")
        print(f"tuned: {args.work_dir} layers={len(result)} "
              f"seconds={time.perf_counter() - start:.1f}")
        return 0
    rows = tune_report(args.model, target=args.target, tuning_db=args.work_dir,
                       shapes=_shapes(args.shape))
    print(f"{'task':<24} {'kind':<7} {'bits':<5} {'trials':>6} {'tuned ms':>9} "
          f"{'default ms':>10} {'speed-up':>8}")
    def fmt(v, spec):
        return format(v, spec) if v is not None else "-"
    for r in rows:
        print(f"{r.task:<24} {r.kind:<7} {r.bits:<5} {r.trials:>6} {fmt(r.best_ms, '9.4f')} "
              f"{fmt(r.default_ms, '10.4f')} {fmt(r.speedup, '8.2f')}"
              + ("  (default kept: no record beats it by enough)" if r.kept_default else ""))
    print(f"tuned: {args.work_dir} tasks={len(rows)} seconds={time.perf_counter() - start:.1f}")
    if args.keep_best:
        from .tuning import keep_best

        before, after = keep_best(args.work_dir, args.target)
        print(f"kept the records compile may use: {before} -> {after} records")
    return 0


def _as_list(out):
    return out if isinstance(out, list) else [out]


def _sim_row(name: str, bits: str, r: dict) -> str:
    if r.get("device") != "accel":
        return f"{name:<12} {bits:<5} on the host CPU: {r.get('reason', '')}"
    exact = {True: "yes", False: "NO", None: "-"}[r.get("exact")]
    return (f"{name:<12} {bits:<5} {r['cycles']:>10} {r['time_us'] / 1e3:>8.3f} "
            f"{r['utilization']:>6.1%} {r['efficiency']:>6.1%} {r['gops']:>7.1f} "
            f"{r['dram_bytes'] / 1e6:>8.3f} {exact:>5}")


def _cmd_sim(args) -> int:
    import json

    import numpy as np

    from .bitserial_accel import AccelConfig
    from .errors import NotOffloadable
    from .target.accel.report import simulate_layer
    from .testing.suite import suite_layer

    config = AccelConfig.load(args.config)
    peak = config.peak_bit_macs_per_cycle * config.clock_mhz / 1e3
    print(f"accelerator {config.name}: {config.block_out}x{config.block_in} bit-plane GEMM, "
          f"{config.clock_mhz:g} MHz, peak {peak:g} G binary MAC/s (cycle model of the C++ "
          "simulator, not a board measurement)")
    print(f"{'layer':<12} {'bits':<5} {'cycles':>10} {'ms':>8} {'util':>6} {'effic':>6} "
          f"{'GOPS':>7} {'DRAM MB':>8} {'exact':>5}")
    rows = []
    if args.model:
        from .compiler import compile as qnn_compile

        art = qnn_compile(args.model, target=f"accel:{args.config}" if args.config else "accel",
                          shapes=_shapes(args.shape))
        feeds = _random_feeds(art)
        for r in art.profile(*feeds):
            r.setdefault("bits", "")
            rows.append(r)
        # The whole model against the CPU kernels (themselves checked against ONNX).
        cpu = qnn_compile(args.model, target="x86", shapes=_shapes(args.shape))
        model_exact = all(np.array_equal(a, b) for a, b in
                          zip(_as_list(art.run(*feeds)), _as_list(cpu.run(*feeds)), strict=True))
        for r in rows:
            if r.get("device") == "accel":
                r["exact"] = model_exact  # of the whole model's output
            print(_sim_row(r["name"], r["bits"], r), flush=True)
    else:
        for name in args.layers:
            for w, a in args.bits:
                layer, codes = suite_layer(name, w, a)
                try:
                    r = simulate_layer(layer, codes, config)
                except NotOffloadable as err:
                    r = {"device": "cpu", "reason": str(err)}
                r.update(name=name, bits=f"W{w}A{a}")
                rows.append(r)
                print(_sim_row(name, r["bits"], r), flush=True)
    accel = [r for r in rows if r.get("device") == "accel"]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"config": json.loads(config.to_json()), "layers": rows}, f, indent=1)
    convs = [r["utilization"] for r in accel if r["kind"] == "conv2d"]
    wrong = sum(1 for r in accel if r.get("exact") is False)
    print(f"sim: layers={len(rows)} accel={len(accel)} "
          f"min_conv_utilization={min(convs) if convs else float('nan'):.3f} "
          f"cycles={sum(r['cycles'] for r in accel)} not_exact={wrong}")
    return 1 if wrong else 0


def _random_feeds(art, seed: int = 0) -> list:
    """Random inputs for ``art``: floats in [0, 1), integers over their dtype's range."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = []
    for info in art.inputs:
        if np.issubdtype(np.dtype(info.dtype), np.floating):
            feeds.append(rng.random(info.shape).astype(info.dtype))
        else:
            lim = np.iinfo(info.dtype)
            feeds.append(rng.integers(lim.min, int(lim.max) + 1, info.shape, info.dtype))
    return feeds


def _cmd_profile(args) -> int:
    from .compiler import compile as qnn_compile
    from .runtime.profile import format_table, summarize

    art = qnn_compile(args.model, target=args.target, shapes=_shapes(args.shape),
                      tuning_db=args.tuning_db, threads=args.threads)
    rows = art.profile(*_random_feeds(art), split=args.split and not art.accel_layers)
    if art.accel_layers:  # the accelerator's cycle model, as tvm-qnn sim prints it
        for r in rows:
            print(_sim_row(r["name"], r.get("bits", ""), r))
        print(f"profile: layers={len(rows)} target={art.target}")
        return 0
    print(f"{art.target}, random input, each function timed alone on its arguments")
    print(format_table(rows))
    s = summarize(rows)
    print(f"profile: total_ms={s['total_ms']:.4f} layers_ms={s['layers_ms']:.4f} "
          f"pack_ms={s['pack_ms']:.4f} ops_ms={s['ops_ms']:.4f}")
    return 0


def _cmd_demo(args) -> int:
    from . import demo

    return demo.main([])


def _stop_on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _cmd_device(args) -> int:
    import signal
    import time

    from .target import resolve_target

    qnn_target = resolve_target(args.target)
    dev = qnn_target.rpc_device(args.key, tracker_port=args.tracker_port)
    if dev is None:
        raise TvmQnnError(f"--target {args.target}: no emulated device to serve over RPC "
                          "(aarch64 boards have one)")
    # Ctrl-C and kill both stop the device cleanly. Set explicitly: a process started in the
    # background by a non-interactive shell inherits SIGINT ignored, and Python then never
    # raises KeyboardInterrupt (measured: the CI job's device never stopped).
    handlers = {sig: signal.signal(sig, _stop_on_signal) for sig in (signal.SIGINT,
                                                                     signal.SIGTERM)}
    try:
        # start() stops what it started when it fails; stop() is for a signal after it.
        dev.start()
        print(f"device: key={dev.key} tracker=127.0.0.1:{dev.tracker_port} ready (its secret "
              f"key, for this user only: {dev.secret_file}; Ctrl-C stops it)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0


def _run_bench(argv: list[str]) -> int:
    """``tvm-qnn bench``: the ``bench/`` suite of the source checkout this package runs from."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "__main__.py").is_file():
        raise SystemExit("tvm-qnn bench: the benchmark suite ships with the source checkout "
                         f"(bench/ is not next to {root / 'tvm_qnn'}); run it from a clone")
    sys.path.insert(0, str(root))
    from bench.__main__ import main as bench_main

    return bench_main(argv)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tvm-qnn`` (exposed for the docs and tests)."""
    from .testing.suite import LAYER_SUITE

    parser = argparse.ArgumentParser(prog="tvm-qnn", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show the compiler log")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="per-layer bits, MACs by precision, BOPs, packed bytes")
    p.add_argument("model", help="quantized ONNX model")
    _add_shape_option(p)
    p.add_argument("--target", type=cli_args.target_spec, help="also say each layer's kernel")
    p.add_argument("--tuning-db", default=None, help="with --target: the work dir of a tune")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("compile", help="compile a quantized model to a shared library")
    p.add_argument("model", help="quantized ONNX model")
    p.add_argument("--target", default="x86", type=cli_args.target_spec,
                   help="x86 (default), a TVM target JSON")
    p.add_argument("-o", "--output", required=True, type=cli_args.output_library,
                   help="path of the .so to write")
    _add_shape_option(p)
    p.add_argument("--tuning-db", default=None, help="the work dir of `tvm-qnn tune`")
    p.add_argument("--threads", type=int, default=None,
                   help="threads the library runs on (default: TVM_NUM_THREADS, else the "
                        "machine's physical cores)")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("tune", help="tune the bit-serial layers (MetaSchedule + XGBoost)")
    p.add_argument("model", help="quantized ONNX model")
    p.add_argument("--target", default="x86", type=cli_args.target_spec,
                   help="x86 (default): tuned on this CPU; "
                   "x86:<mcpu>, arm_cpu[:board] (llvm-mca model), accel[:config.json] "
                   "(tilings, scored by the simulator's cycles)")
    p.add_argument("--trials", type=int, default=64, help="trials per distinct layer kernel")
    p.add_argument("--work-dir", default="tvm_qnn_tuning", type=cli_args.work_dir,
                   help="the JSON database (resumable)")
    p.add_argument("--runner", default=None,
                   help="local (this CPU), model (llvm-mca of an aarch64 board) or "
                        "KEY@HOST:PORT of a TVM RPC tracker; default: local when the target "
                        "runs here, else model")
    p.add_argument("--timeout", type=float, default=30,
                   help="seconds before a candidate (or RPC session) counts as failed")
    _add_shape_option(p)
    p.add_argument("--keep-best", action="store_true",
                   help="then keep only the records compile may use (each kernel's best, the "
                        "default's where it wins): a database to ship, fast to load")
    p.set_defaults(func=_cmd_tune)

    # Listed for --help; main() hands their arguments to tvm_qnn.train / bench untouched.
    sub.add_parser("train", help="train a CNV with the {-1,+1} encoding (tvm-qnn train --help)")
    sub.add_parser("bench", help="the benchmark suite, from a source checkout "
                                 "(tvm-qnn bench --target x86|arm_cpu[:board] --help)")

    p = sub.add_parser("device", help="run an emulated board as a TVM RPC device")
    p.add_argument("action", choices=["start"])
    p.add_argument("--target", default="arm_cpu", type=cli_args.target_spec,
                   help="an aarch64 arm_cpu[:board] target")
    p.add_argument("--key", default=None, help="device key (default: the board name)")
    p.add_argument("--tracker-port", type=int, default=None,
                   help="use the tracker on this loopback port (default: start one)")
    p.set_defaults(func=_cmd_device)

    p = sub.add_parser("sim", help="the accelerator's cycles, utilization and GOPS per layer")
    p.add_argument("model", nargs="?", help="a quantized model (default: the layer suite)")
    p.add_argument("--config", default=None, type=cli_args.existing_file,
                   help="accelerator config.json (default: built in)")
    p.add_argument("--layers", nargs="+", default=list(LAYER_SUITE), choices=list(LAYER_SUITE),
                   metavar="LAYER", help=f"suite layers ({' '.join(LAYER_SUITE)})")
    p.add_argument("--bits", nargs="+", default=[(1, 1), (2, 2), (1, 2)],
                   type=cli_args.bits_spec, metavar="WxA",
                   help="weight x activation bits, e.g. 1x1 2x2 1x2")
    p.add_argument("--json", default=None, help="write the rows here")
    _add_shape_option(p)
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("profile", help="where a compiled model's time goes, function by "
                                       "function (the accelerator: its cycle model)")
    p.add_argument("model", help="quantized ONNX model")
    p.add_argument("--target", default="x86", type=cli_args.target_spec,
                   help="x86 (default), x86:<mcpu>, accel")
    p.add_argument("--threads", type=int, default=None,
                   help="threads (default: TVM_NUM_THREADS, else the physical cores)")
    p.add_argument("--tuning-db", default=None, help="the work dir of `tvm-qnn tune`")
    p.add_argument("--split", action="store_true", help="each layer's time split into input "
                   "pack, branch kernel, epilogue (CPU; 2 more compilations per layer)")
    _add_shape_option(p)
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("demo", help="compile and run the embedded demo model")
    p.set_defaults(func=_cmd_demo)
    return parser


def _dispatch(argv: list[str]) -> int:
    # train and bench parse their own arguments; -v before them still applies.
    v = next((k for k, arg in enumerate(argv) if arg not in ("-v", "--verbose")), len(argv))
    own = argv[v] if argv[v:v + 1] in (["train"], ["bench"]) else None
    args = None if own else build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if (args.verbose if args else v) else logging.WARNING,
                        format="%(name)s: %(message)s")
    if own == "bench":
        return _run_bench(argv[v + 1:])
    if own == "train":
        from . import train

        return train.main(argv[v + 1:])
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tvm-qnn``; returns the exit code.

    Bad arguments are usage errors (exit code 2, from argparse). What the library refuses
    (:class:`TvmQnnError`), and the OS and value errors of reading the user's files, print
    ``error: ...`` and return 2, without a traceback (``-v`` adds it to the latter: they can
    also be bugs). Any other exception is a bug and propagates.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _dispatch(argv)
    except TvmQnnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        if "-v" in argv or "--verbose" in argv:
            import traceback

            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
