# SPDX-License-Identifier: Apache-2.0
"""``tvm_qnn.summary``: a per-layer table of bits, MACs by precision, BOPs and packed bytes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSummary:
    """The rows of :func:`summary`; ``str()`` renders the table."""

    rows: list[dict]

    @property
    def macs_by_precision(self) -> dict[str, int]:
        """Total MACs per precision label (``W2A2``, ``float``…)."""
        totals: Counter = Counter()
        for row in self.rows:
            totals[_precision(row)] += row["macs"]
        return dict(totals)

    @property
    def bops(self) -> int:
        """Binary operations of the bit-serial layers: MACs × M × K."""
        return sum(r["macs"] * r["act_bits"] * r["weight_bits"] for r in self.rows
                   if r["bitserial"])

    def __str__(self) -> str:
        header = ("layer", "kind", "precision", "MACs", "BOPs", "packed bytes", "note")
        lines = []
        for r in self.rows:
            bops = r["macs"] * r["act_bits"] * r["weight_bits"] if r["bitserial"] else 0
            note = r["reason"] if not r["bitserial"] else \
                f"{r['kernel']} ({r['kernel_choice']})" if "target" in r else ""
            lines.append((r["name"], r["kind"], _precision(r), f"{r['macs']:,}",
                          f"{bops:,}" if r["bitserial"] else "-",
                          f"{r['packed_weight_bytes']:,}" if r["bitserial"] else "-", note))
        widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        out += [fmt.format(*line).rstrip() for line in lines]
        totals = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.macs_by_precision.items()))
        out.append(f"MACs by precision: {totals or 'none'}; BOPs: {self.bops:,}")
        return "\n".join(out)


def _precision(row: dict) -> str:
    return f"W{row['weight_bits']}A{row['act_bits']}" if row["bitserial"] else "float"


def summary(model, shapes: dict | None = None, target=None, tuning_db=None) -> ModelSummary:
    """Describe how tvm_qnn sees each conv2d / dense layer of ``model`` (nothing is built).

    Parameters
    ----------
    model : onnx.ModelProto, path or tvm.IRModule
        As for :func:`tvm_qnn.compile`.
    shapes : dict, optional
        Static shapes for inputs with symbolic dimensions.
    target : str or QnnTarget, optional
        With a target, each bit-serial layer's note says the kernel it gets there and who
        chose it (the target's cost model, or ``tuning_db``'s measured kernel families), and
        packed bytes are in the target's layout.
    tuning_db : path, optional
        A tuning folder (:func:`tvm_qnn.tune`), as ``compile`` takes it.
    """
    from .frontend import load_model
    from .pipeline import layer_report

    mod = load_model(model, shapes)
    if target is None:
        return ModelSummary(layer_report(mod))
    from .target import resolve_target
    from .tuning.families import read_kernel_families

    qnn_target = resolve_target(target)
    rows = layer_report(mod, qnn_target.layout, read_kernel_families(tuning_db))
    return ModelSummary([{**r, "target": qnn_target.alias} for r in rows])
