# SPDX-License-Identifier: Apache-2.0
"""Where a compiled model's time goes on the CPU: every compiled function the Relax VM calls,
timed alone on the arguments of a real run.

One instrumented run records each call and its arguments; each function is then timed by
TVM's time evaluator on those arguments, the way the whole model is timed (no Python in the
loop). Layer kernels (``bitserial_*``, one per bit-serial layer, in model order) are named after
their layer; the channels-last bit-plane pack before a layer (``pack_channels_last*``) is
charged to that layer; everything else (pooling, quantize, the float layers tvm_qnn left as
they were) is listed as the ops between layers.

With the layers' scheduled kernels at hand (an artifact compiled in this process), each
layer's time can also be split into its input pack, branch kernel and epilogue
(:mod:`.kernel_split`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from tvm import relax

from .kernel_split import split_kernel
from .library import runtime_module
from .timing import evaluator_seconds

_KERNEL_PREFIX = "bitserial_"
_PACK_PREFIX = "pack_channels_last"


def _recorded_calls(module, device, args) -> list[tuple[str, list]]:
    """(function symbol, arguments) of every compiled-function call of one run of ``main``."""
    calls: list[tuple[str, list]] = []

    def instrument(_func, symbol, before_run, _ret, *call_args):
        if before_run and not symbol.startswith("vm.builtin"):
            calls.append((symbol, list(call_args)))
        return 0

    vm = relax.VirtualMachine(module, device)
    vm.set_instrument(instrument)
    vm["main"](*args)
    return calls


def _library_of(module, symbol: str):
    """The module (the executable or one of its imports) that implements ``symbol``."""
    root = runtime_module(module)
    for mod in [root, *root.imports]:
        if mod.implements_function(symbol):
            return mod
    return None


def profile_calls(module, device, args, layer_names: list[str], number: int = 20,
                  repeat: int = 5, layer_kernels: Mapping | None = None, target=None,
                  progress: bool = False) -> list[dict]:
    """One dict per call of a compiled function in a run of ``main``, in call order.

    ``layer_names``: the bit-serial layers in model order (the report's names). Each dict has
    ``function`` (its symbol), ``kind`` (``"layer"``, ``"pack"`` or ``"op"``), ``layer`` (the
    layer a kernel or pack belongs to, else None) and ``ms`` (median milliseconds, timed
    alone on the call's own arguments).

    ``layer_kernels`` (symbol -> the scheduled PrimFunc) and the TVM ``target`` they were compiled
    for: each layer row also gets ``pack_ms``, ``kernel_ms`` and ``epilogue_ms``
    (:func:`~.kernel_split.split_kernel`: two more compilations per layer; ``progress``
    shows a bar).
    """
    calls = _recorded_calls(module, device, args)
    kernels = [symbol for symbol, _ in calls if symbol.startswith(_KERNEL_PREFIX)]
    # Kernels run in model order; match them to the layers only when the counts agree.
    names = iter(layer_names if len(kernels) == len(layer_names) else kernels)
    rows, pending_packs = [], []
    if layer_kernels is not None and progress:
        from tqdm import tqdm

        calls = tqdm(calls, desc="profile: splitting layer kernels", unit="call")
    for symbol, call_args in calls:
        lib = _library_of(module, symbol)
        if lib is None:  # a packed function of another kind (e.g. the accelerator's driver)
            continue
        ms = 1e3 * evaluator_seconds(lib, symbol, device, *call_args, number=number,
                                     repeat=repeat)
        row = {"function": symbol, "kind": "op", "layer": None, "ms": ms}
        if symbol.startswith(_PACK_PREFIX):
            row["kind"] = "pack"
            pending_packs.append(row)
        elif symbol.startswith(_KERNEL_PREFIX):
            row.update(kind="layer", layer=next(names))
            if layer_kernels is not None and symbol in layer_kernels:
                row.update(split_kernel(layer_kernels[symbol], symbol, target, device,
                                        call_args, ms, number=number, repeat=repeat))
            for pack in pending_packs:
                pack["layer"] = row["layer"]
            pending_packs = []
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Totals of :func:`profile_calls` rows: ``layers_ms`` (kernels), ``pack_ms``, ``ops_ms``
    (between layers) and ``total_ms``."""
    total = {kind: float(np.sum([r["ms"] for r in rows if r["kind"] == kind]))
             for kind in ("layer", "pack", "op")}
    return {"layers_ms": total["layer"], "pack_ms": total["pack"], "ops_ms": total["op"],
            "total_ms": sum(total.values())}


def format_table(rows: list[dict]) -> str:
    """The rows as a table, with a totals line (and a layer's pack / kernel / epilogue split
    where the rows have one)."""
    split = any("kernel_ms" in r for r in rows)
    head = f"{'function':<40} {'kind':<6} {'layer':<24} {'ms':>9}"
    lines = [head + (f" {'pack':>8} {'kernel':>8} {'epilogue':>8}" if split else "")]
    for r in rows:
        line = f"{r['function']:<40} {r['kind']:<6} {r['layer'] or '-':<24} {r['ms']:>9.4f}"
        if "kernel_ms" in r:
            line += f" {r['pack_ms']:>8.4f} {r['kernel_ms']:>8.4f} {r['epilogue_ms']:>8.4f}"
        lines.append(line)
    s = summarize(rows)
    lines.append(f"total {s['total_ms']:.4f} ms: layer kernels {s['layers_ms']:.4f}, "
                 f"bit-plane packs {s['pack_ms']:.4f}, ops between layers {s['ops_ms']:.4f}")
    if split:
        parts = {k: sum(r.get(f"{k}_ms", 0.0) for r in rows) for k in ("pack", "kernel",
                                                                       "epilogue")}
        lines.append(f"layer kernels split: input packs {parts['pack']:.4f}, branch kernels "
                     f"{parts['kernel']:.4f}, epilogues {parts['epilogue']:.4f}")
    return "\n".join(lines)


__all__ = ["format_table", "profile_calls", "summarize"]
