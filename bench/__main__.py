# SPDX-License-Identifier: Apache-2.0
"""The benchmark suite: ``python -m bench --target T [options]`` (or ``tvm-qnn bench``).

``--target x86`` (default) measures on this CPU (:mod:`bench.bench_layers`): the layer suite
(conv3x3 56²·64 … 7²·512, dense 1×4096 and 64×4096) at ``--bits`` ``WxA`` and ``--threads``,
each case next to its peers timed in the same run (:mod:`bench.peers`: PyTorch fp32, PyTorch
int8 with its fastest quantized engine, onnxruntime int8 on a fused QDQ model) and the
popcount roofline of a probe kernel (:mod:`bench.roofline`); ``--models`` adds the shipped
trained CNVs end to end; ``--json`` and ``--png`` write the results. ``--target
arm_cpu[:board]`` prints the llvm-mca model of the same layers for the board
(:mod:`bench.arm_model`) — a model, never a time, since no ARM board is reachable from here.
Other options go to the module that runs. ``--mcpu`` also limits the peers to that CPU's
instruction sets (:mod:`bench.peer_isa`), set here before anything imports PyTorch.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch on ``--target``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    target = "x86"
    if "--target" in argv:
        k = argv.index("--target")
        if k + 1 >= len(argv):
            raise SystemExit("--target needs a value: x86 or arm_cpu[:board]")
        target = argv[k + 1]
        del argv[k:k + 2]
    if target.startswith("arm_cpu"):
        from . import arm_model

        board = target.partition(":")[2] or "rasp4b"
        return arm_model.main(["--boards", board, *argv])
    if target != "x86":
        raise SystemExit(f"--target {target}: the suite runs on x86 (measured) or "
                         "arm_cpu[:board] (modelled)")
    mcpu = _option_value(argv, "--mcpu")
    if mcpu:  # before bench_layers imports TVM, which imports PyTorch
        from . import peer_isa

        # False (PyTorch imported already, e.g. by tvm-qnn): bench_layers reruns the suite.
        peer_isa.apply(peer_isa.peer_limits(mcpu))
    from . import bench_layers

    return bench_layers.main(argv)


def _option_value(argv: list[str], option: str) -> str | None:
    """The value of ``option`` in ``argv`` (``--opt v`` or ``--opt=v``), else None."""
    for k, arg in enumerate(argv):
        if arg == option and k + 1 < len(argv):
            return argv[k + 1]
        if arg.startswith(option + "="):
            return arg.partition("=")[2]
    return None


if __name__ == "__main__":
    sys.exit(main())
