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
    tvm-qnn demo                                the README's main job

Each command ends with one line a script can grep (``summary:``, ``compiled:``); ``-v`` shows
the compiler's log (which layers went bit-serial and why others did not).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .errors import TvmQnnError


def _shapes(items: list[str] | None) -> dict | None:
    """``name=1,3,32,32`` → ``{"name": (1, 3, 32, 32)}``."""
    if not items:
        return None
    out = {}
    for item in items:
        name, _, dims = item.partition("=")
        try:
            out[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise TvmQnnError(f"--shape {item!r}: expected NAME=D0,D1,...") from None
    return out


def _cmd_summary(args) -> int:
    from .summary import summary

    s = summary(args.model, shapes=_shapes(args.shape))
    print(s)
    n = sum(1 for r in s.rows if r["bitserial"])
    print(f"summary: {n}/{len(s.rows)} layers bit-serial, BOPs {s.bops}")
    return 0


def _cmd_compile(args) -> int:
    from .compiler import compile as qnn_compile

    start = time.perf_counter()
    art = qnn_compile(args.model, target=args.target, shapes=_shapes(args.shape),
                      tuning_db=args.tuning_db)
    art.export_library(args.output)
    n = sum(1 for r in art.layers if r["bitserial"])
    print(f"compiled: {args.output} target={art.target} bitserial_layers={n}/{len(art.layers)} "
          f"seconds={time.perf_counter() - start:.1f}")
    return 0


def _cmd_tune(args) -> int:
    from .tuning import tune, tune_report

    start = time.perf_counter()
    tune(args.model, target=args.target, trials=args.trials, work_dir=args.work_dir,
         runner=args.runner, timeout=args.timeout, shapes=_shapes(args.shape))
    rows = tune_report(args.model, target=args.target, tuning_db=args.work_dir,
                       shapes=_shapes(args.shape))
    print(f"{'task':<24} {'kind':<7} {'bits':<5} {'trials':>6} {'tuned ms':>9} "
          f"{'default ms':>10} {'speed-up':>8}")
    for r in rows:
        def fmt(v, spec):
            return format(v, spec) if v is not None else "-"
        print(f"{r.task:<24} {r.kind:<7} {r.bits:<5} {r.trials:>6} {fmt(r.best_ms, '9.4f')} "
              f"{fmt(r.default_ms, '10.4f')} {fmt(r.speedup, '8.2f')}")
    print(f"tuned: {args.work_dir} tasks={len(rows)} "
          f"seconds={time.perf_counter() - start:.1f}")
    return 0


def _cmd_demo(args) -> int:
    from . import demo

    return demo.main([])


def _cmd_device(args) -> int:
    import time

    from .target import ArmTarget, resolve_target
    from .target.arm.device import EmulatedRPCDevice

    backend = resolve_target(args.target)
    if not isinstance(backend, ArmTarget) or backend.emulator() is None:
        raise TvmQnnError(f"--target {args.target}: emulated devices exist for aarch64 boards")
    key = args.key or backend.board_name
    dev = EmulatedRPCDevice(key, tracker_port=args.tracker_port).start()
    print(f"device: key={key} tracker=127.0.0.1:{dev.tracker_port} ready (Ctrl-C stops it)",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()
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
    parser = argparse.ArgumentParser(prog="tvm-qnn", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show the compiler log")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="per-layer bits, MACs by precision, BOPs, packed bytes")
    p.add_argument("model", help="quantized ONNX model")
    p.add_argument("--shape", action="append", metavar="NAME=D0,D1,...",
                   help="static shape of an input with symbolic dimensions")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("compile", help="compile a quantized model to a shared library")
    p.add_argument("model", help="quantized ONNX model")
    p.add_argument("--target", default="x86", help="x86 (default), a TVM target JSON")
    p.add_argument("-o", "--output", required=True, help="path of the .so to write")
    p.add_argument("--shape", action="append", metavar="NAME=D0,D1,...",
                   help="static shape of an input with symbolic dimensions")
    p.add_argument("--tuning-db", default=None, help="the work dir of `tvm-qnn tune`")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("tune", help="tune the bit-serial layers (MetaSchedule + XGBoost)")
    p.add_argument("model", help="quantized ONNX model")
    p.add_argument("--target", default="x86", help="x86 (default): tuned on this CPU")
    p.add_argument("--trials", type=int, default=64, help="trials per distinct layer kernel")
    p.add_argument("--work-dir", default="tvm_qnn_tuning", help="the JSON database (resumable)")
    p.add_argument("--runner", default="local",
                   help="local (this CPU, default) or KEY@HOST:PORT of a TVM RPC tracker")
    p.add_argument("--timeout", type=float, default=30,
                   help="seconds before a candidate (or RPC session) counts as failed")
    p.add_argument("--shape", action="append", metavar="NAME=D0,D1,...",
                   help="static shape of an input with symbolic dimensions")
    p.set_defaults(func=_cmd_tune)

    # Listed for --help; main() hands their arguments to tvm_qnn.train / bench untouched.
    sub.add_parser("train", help="train a CNV with the {-1,+1} encoding (tvm-qnn train --help)")
    sub.add_parser("bench", help="the benchmark suite, from a source checkout "
                                 "(tvm-qnn bench --target x86|arm_cpu[:board] --help)")

    p = sub.add_parser("device", help="run an emulated board as a TVM RPC device")
    p.add_argument("action", choices=["start"])
    p.add_argument("--target", default="arm_cpu", help="an aarch64 arm_cpu[:board] target")
    p.add_argument("--key", default=None, help="device key (default: the board name)")
    p.add_argument("--tracker-port", type=int, default=None,
                   help="use the tracker on this loopback port (default: start one)")
    p.set_defaults(func=_cmd_device)

    p = sub.add_parser("demo", help="compile and run the embedded demo model")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tvm-qnn``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from . import train

        return train.main(argv[1:])
    if argv[:1] == ["bench"]:
        return _run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    if getattr(args, "target", None) and args.target.startswith("{"):
        import json

        args.target = json.loads(args.target)
    try:
        return args.func(args)
    except TvmQnnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
