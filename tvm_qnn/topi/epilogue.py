# SPDX-License-Identifier: Apache-2.0
"""The fused requantize epilogue: branch sums ``P`` (and row sums ``Su``) → layer output.

Every kernel (bit-serial conv2d and dense, the integer conv, the accelerator's host half) ends
in the same element-wise step, built here once by :func:`epilogue_compute`. It evaluates the
integer accumulator of the quantized layer from the sums the kernel computed::

    2 acc = neg_d P + coef_su Su + const2                (derivation: :mod:`.branches`)

and then follows ONNX semantics in float32: ``v = float(acc) * (s_x s_w) + bias``, an
optional clamp (ReLU / Clip), then ``q = saturate(round_half_even(v / s_y) + z_y)`` (or the
sign codes of a BipolarQuant); or, when :mod:`.thresholds` found them, counts integer
thresholds on ``2 acc`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from ..reference import ROUNDED_BOUND
from .attrs import EPILOGUE_BLOCK, LAYOUT_ATTR
from .requantize import Requantize


@dataclass(frozen=True)
class Epilogue:
    """Per-output-channel constants of the fused epilogue (numpy arrays of length OC).

    ``neg_d`` multiplies P, ``coef_su`` multiplies Su, ``const2`` is the rest of ``2 acc``;
    ``mscale`` turns the integer accumulator into the float value, and ``output`` (the layer's
    :class:`~.requantize.Requantize`, per channel) is what follows: bias, clamp, quantization.
    """

    neg_d: np.ndarray
    coef_su: np.ndarray
    const2: np.ndarray
    mscale: np.ndarray
    output: Requantize
    # Integer type of ``2 acc``: int32 when its bound fits (half the vector work of int64).
    acc_dtype: str = "int64"
    # Integer requantization (:mod:`.thresholds`): ``q = base + #{k: 2acc >= thresholds[:, k]}``
    # ([OC, K] in ``acc_dtype``, [OC] int32), replacing mscale and the output's float steps.
    thresholds: np.ndarray | None = None
    base: np.ndarray | None = None

    @property
    def needs_rowsum(self) -> bool:
        """True when the ``Su`` term is not zero for some channel."""
        return bool(np.any(self.coef_su != 0))

    @property
    def quantized(self) -> bool:
        """True when the epilogue ends in a QuantizeLinear (integer codes out)."""
        return self.output.quantized

    @property
    def out_dtype(self) -> str:
        """The dtype of the layer output."""
        return self.output.out_dtype

    def array(self, name: str) -> np.ndarray:
        """The per-channel constant ``name`` (of this epilogue or of its output)."""
        return getattr(self.output if name in _OUTPUT_PARAMS else self, name)

    def tensor_params(self) -> list[tuple[str, np.ndarray]]:
        """The per-channel arrays that differ between channels (passed as tensors).

        Uniform arrays are folded into the code as immediates instead.
        """
        names = ["neg_d", "coef_su", "const2"]
        if self.thresholds is not None:
            names += ["thresholds", "base"]
        else:
            names += ["mscale", "bias"] + (["out_scale", "out_zero_point"]
                                           if self.quantized else [])
        out = []
        for name in names:
            arr = self.array(name)
            if name == "thresholds":  # per channel: uniform when every row is the same
                if not np.all(arr == arr[:1]):
                    # Step-major [K, OC]: the kernel's channel vector loads one contiguous
                    # row per step, where [OC, K] made it a gather of K-strided words.
                    out.append((name, np.ascontiguousarray(arr.T)))
            elif not np.all(arr == arr.flat[0]):
                if name in _ACC_PARAMS:
                    arr = arr.astype(self.acc_dtype)
                out.append((name, arr))
        return out


_ACC_PARAMS = ("neg_d", "coef_su", "const2")
_OUTPUT_PARAMS = ("bias", "out_scale", "out_zero_point")


def _param_getter(epi: Epilogue, tensors: dict[str, te.Tensor]):
    """Return ``get(name, oc)``: a tensor load for varying params, an immediate otherwise
    (one that stays int32 in a threshold epilogue's comparisons, :func:`integer_immediate`)."""
    immediate = integer_immediate if epi.thresholds is not None else tirx.const
    acc = epi.acc_dtype
    dtypes = {"neg_d": acc, "coef_su": acc, "const2": acc, "mscale": "float32",
              "bias": "float32", "out_scale": "float32", "out_zero_point": "int32",
              "thresholds": acc, "base": "int32"}

    def get(name, oc, k=None):
        """``name[oc]`` (``thresholds[oc, k]``, stored step-major)."""
        if name in tensors:
            return tensors[name][oc] if k is None else tensors[name][k, oc]
        arr = epi.array(name)
        value = arr.flat[0] if k is None else arr[0, k]
        return immediate(value.item(), dtypes[name])

    return get


def integer_immediate(value, dtype: str):
    """The constant ``value`` of ``dtype``, as an expression that stays ``dtype``.

    Relax's ``call_te`` builds its PrimFunc with int64 indices
    (``te.create_prim_func(..., "int64")``), and that rewrite takes int32 immediates (and
    casts to int32) in a comparison for indices: the threshold test ``2 * p >= t`` on int32
    values became ``int64(t) <= int64(p) * 2``, twice the vector work per output. Measured
    (default templates, one Zen 4 core, best of 9 alternated rounds): CNV_2W2A 0.290 →
    0.281 ms as ``x86:haswell`` code, 0.206 → 0.202 ms with VPOPCNTDQ. A reinterpreted
    unsigned constant is not an immediate to it; LLVM folds it back. Zero stays an immediate
    (TVM's code generator takes a reinterpreted zero for a null pointer), which the rewrite
    leaves alone where it only adds or selects.
    """
    if dtype != "int32" or value == 0:
        return tirx.const(value, dtype)
    return tirx.reinterpret("int32", tirx.const(int(value) & 0xFFFFFFFF, "uint32"))


def _as_acc(x, dtype: str):
    """A branch or row sum ``x`` as ``dtype``. Into int32, an unsigned or 64-bit sum goes as
    its low 32 bits, reinterpreted: the index rewrite of :func:`integer_immediate` widens an
    ``int32(...)`` cast to int64 (the sums fit: the plan chose int32 by their bound)."""
    source = str(x.dtype)
    if dtype == "int32" and source != "int32" and (source.startswith("uint")
                                                    or source == "int64"):
        return tirx.reinterpret("int32", x.astype("uint32"))
    return x.astype(dtype)


def _fenced(x):
    """``llvm.arithmetic.fence(x)``: the value of ``x``, never contracted with its users.

    TVM and LLVM fuse a float ``a * b + c`` into an FMA, which skips the rounding of the
    product and breaks bit-exactness with ONNX's float32 ``(acc * scale) + bias``.
    """
    return tirx.call_llvm_pure_intrin("float32", "llvm.arithmetic.fence", x)


def _round_half_even(x):
    """ONNX QuantizeLinear's rounding, as ``llvm.roundeven``.

    Same result as ``nearbyint`` in the default rounding mode, but it vectorizes next to the
    fence above, where ``nearbyint`` made LLVM scalarize the whole epilogue (measured: the
    conv56 epilogue took 0.25 ms of a 0.43 ms layer).
    """
    return tirx.call_llvm_pure_intrin(x.ty if hasattr(x, "ty") else "float32",
                                      "llvm.roundeven", x)


def _epilogue_value(epi: Epilogue, get, oc, p, su):
    """Integer branches → output value of one element (the fused requantize epilogue)."""
    dtype = epi.acc_dtype
    # Only comparisons are widened by the index rewrite (see integer_immediate).
    as_acc = _as_acc if epi.thresholds is not None else (lambda x, d: x.astype(d))
    acc2 = get("neg_d", oc) * as_acc(p, dtype) + get("const2", oc)
    if su is not None:
        acc2 = acc2 + get("coef_su", oc) * as_acc(su, dtype)
    if epi.thresholds is not None:
        q = get("base", oc)
        for k in range(epi.thresholds.shape[1]):
            q = q + tirx.Select(acc2 >= get("thresholds", oc, k), tirx.const(1, "int32"),
                                tirx.const(0, "int32"))
        return q.astype(epi.out_dtype)
    acc = tirx.shift_right(acc2, tirx.const(1, dtype))
    if not epi.quantized and "int" in epi.out_dtype:
        return acc.astype(epi.out_dtype)  # the raw accumulator (ConvInteger)
    v = _fenced(acc.astype("float32") * get("mscale", oc)) + get("bias", oc)
    out = epi.output
    if np.isfinite(out.clamp_lo):
        v = te.max(v, tirx.const(out.clamp_lo, "float32"))
    if np.isfinite(out.clamp_hi):
        v = te.min(v, tirx.const(out.clamp_hi, "float32"))
    if not epi.quantized:
        return v.astype(epi.out_dtype)
    if out.bipolar:
        return tirx.Select(v >= tirx.const(0.0, "float32"), tirx.const(out.qmax, epi.out_dtype),
                           tirx.const(out.qmin, epi.out_dtype))
    q = _round_half_even(v / get("out_scale", oc))
    bound = tirx.const(ROUNDED_BOUND, "float32")  # saturated before the cast (see there)
    q = te.max(te.min(q, bound), -bound).astype("int32") + get("out_zero_point", oc)
    q = te.max(te.min(q, tirx.const(out.qmax, "int32")), tirx.const(out.qmin, "int32"))
    return q.astype(epi.out_dtype)


def epilogue_compute(epi: Epilogue, params, axes: dict[str, int], p_at: Callable,
                     su_at: Callable | None = None, attrs: dict | None = None) -> te.Tensor:
    """The epilogue block: ``out[idx] = requantize(2 acc)`` with ``2 acc`` as in the header.

    Parameters
    ----------
    epi : Epilogue
        The layer's constants.
    params : sequence of te.Tensor
        The tensors of ``epi.tensor_params()``, in order.
    axes : dict of str to int
        The output axes in order, name → extent; the output channel axis is named ``"oc"``.
        The names become the block's iteration variables.
    p_at : callable
        ``p_at(**index)``: the branch sum ``P`` of one output element, called with every axis
        by name (so one indexing serves NCHW and NHWC outputs alike).
    su_at : callable, optional
        ``su_at(**index)``: the row sum ``Su`` of that element; None when ``epi`` does not
        need it.
    attrs : dict, optional
        Block attributes, e.g. ``{LAYOUT_ATTR: "NHWC"}``.

    Returns
    -------
    te.Tensor
        The layer output, block :data:`~.attrs.EPILOGUE_BLOCK`, of ``epi.out_dtype``.
    """
    names = [name for name, _ in epi.tensor_params()]
    get = _param_getter(epi, dict(zip(names, params, strict=True)))
    axis_names = list(axes)

    def out(*idx):
        index = dict(zip(axis_names, idx, strict=True))
        su = su_at(**index) if su_at is not None else None
        return _epilogue_value(epi, get, index["oc"], p_at(**index), su)

    return te.compute(tuple(axes.values()), out, name=EPILOGUE_BLOCK, attrs=attrs,
                      varargs_names=axis_names)


def conv_epilogue(p: te.Tensor, rowsum: te.Tensor | None, epi: Epilogue, params,
                  out_channels: int, groups: int, channels_last: bool = False) -> te.Tensor:
    """The epilogue of a conv: blocked sums → NCHW, or NHWC.

    ``out[n, oc, y, x] = requantize(neg_d P[n, oc // OCi, y, x, oc % OCi]
    + coef_su Su[n, oc // (OC/G), y, x] + const2)``

    Parameters
    ----------
    p : te.Tensor
        ``[N, OC/OCi, OH, OW, OCi]``: the conv kernels' blocked accumulator (bit-serial
        branches and the integer conv alike).
    rowsum : te.Tensor or None
        ``[N, G, OH, OW]`` row sums, or None when ``epi`` does not need them.
    epi, params
        As for :func:`epilogue_compute`.
    out_channels, groups : int
        ``OC`` and ``G``.
    channels_last : bool
        Write NHWC, marked with the block attribute :data:`~.attrs.LAYOUT_ATTR` (what
        :mod:`.pack_channels_last` packs for the next layer), instead of NCHW.

    Returns
    -------
    te.Tensor
        ``[N, OC, OH, OW]`` (or ``[N, OH, OW, OC]``) of ``epi.out_dtype``.
    """
    n, _, oh, ow, oc_inner = (int(s) for s in p.shape)
    ocg = out_channels // groups

    def p_at(nn, oc, yy, xx):
        return p[nn, oc // oc_inner, yy, xx, oc % oc_inner]

    def su_at(nn, oc, yy, xx):
        return rowsum[nn, oc // ocg, yy, xx]

    su = su_at if rowsum is not None else None
    if channels_last:
        return epilogue_compute(epi, params, {"nn": n, "yy": oh, "xx": ow, "oc": out_channels},
                                p_at, su, attrs={LAYOUT_ATTR: "NHWC"})
    return epilogue_compute(epi, params, {"nn": n, "oc": out_channels, "yy": oh, "xx": ow},
                            p_at, su)
