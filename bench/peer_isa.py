# SPDX-License-Identifier: Apache-2.0
"""The peers limited to the instruction sets of ``--mcpu``, so tvm_qnn's code for an x86 CPU
class is compared with peers that may use no more of this host's ISA than it does.

Each library fixes its ISA from an environment variable read once, at first use — so they are
set before PyTorch is imported (TVM imports it: :func:`apply` runs before ``bench`` imports
TVM, and a suite started after PyTorch was imported reruns in a fresh process):

* ATen (PyTorch's own CPU kernels, e.g. requantize): ``ATEN_CPU_CAPABILITY`` = default/avx2/avx512;
* oneDNN (PyTorch fp32 conv, the ``onednn`` and ``x86`` int8 engines): ``ONEDNN_MAX_CPU_ISA``;
* fbgemm (the ``fbgemm`` and ``x86`` int8 engines): ``FBGEMM_ENABLE_INSTRUCTIONS`` = AVX2/AVX512/
  AVX512_E1 (VNNI); it cannot go below AVX2, so for an older ``mcpu`` those engines are dropped;
* MKL (PyTorch fp32 Linear): ``MKL_ENABLE_INSTRUCTIONS``, which MKL honours on Intel CPUs only;
* onnxruntime: MLAS picks its kernels from CPUID, with no environment variable or session
  option to cap it, so CPUID itself is masked to the ``mcpu``'s features (:mod:`bench.cpuid_limit`,
  CPUID faulting). Where the CPU or hypervisor has no CPUID faulting (AMD, some KVM guests:
  ENODEV) it cannot be limited, and its ISA is reported as the host's.

:func:`verify` checks in the measuring process that the limits hold: ATen's reported capability,
the ISA in the name of a oneDNN primitive it creates (``ONEDNN_VERBOSE``: ``jit_uni_int8:avx2``
rather than ``brg_conv_fwd:avx512_core_vnni``), whether fbgemm and onnxruntime use VNNI
(without it their u8·s8 pair products saturate int16: a probe sees the saturated result) and
that CPUID reports none of the masked features.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass

from . import cpuid_limit

ORT_ISA = "host (cannot be limited: MLAS dispatches on CPUID; {why})"
# Instruction sets whose u8*s8 products are summed without int16 saturation.
_EXACT_U8S8 = frozenset({"avx512vnni", "avxvnni", "amxint8"})

# oneDNN's ISA names from least to most; a primitive's name ends in the one it was built for.
ONEDNN_ORDER = ("sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core",
                "avx512_core_vnni", "avx512_core_bf16", "avx512_core_fp16", "avx512_core_amx",
                "avx512_core_amx_fp16")
ATEN_ORDER = ("default", "avx2", "avx512")


@dataclass(frozen=True)
class PeerLimits:
    """The most each peer library may use to stay within ``mcpu``'s instruction sets."""

    mcpu: str
    aten: str
    onednn: str
    fbgemm: str | None  # None: mcpu has no AVX2, below what fbgemm runs
    mkl: str
    features: frozenset[str]  # mcpu's, LLVM's names: what CPUID may report

    def environ(self) -> dict[str, str]:
        env = {"ATEN_CPU_CAPABILITY": self.aten, "ONEDNN_MAX_CPU_ISA": self.onednn,
               "MKL_ENABLE_INSTRUCTIONS": self.mkl}
        if self.fbgemm:
            env["FBGEMM_ENABLE_INSTRUCTIONS"] = self.fbgemm
        return env

    @property
    def torch_engines(self) -> tuple[str, ...]:
        """PyTorch's int8 engines that run within the limits (``x86`` uses fbgemm too)."""
        return ("onednn", "x86", "fbgemm") if self.fbgemm else ("onednn",)


def limits_for(mcpu: str, features: frozenset[str]) -> PeerLimits:
    """The limits for an ``mcpu`` with these instruction-set ``features`` (LLVM's names,
    normalized as :func:`tvm_qnn.target.x86.isa_features` gives them)."""
    f = features
    core = {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= f  # AVX-512 "core", Skylake-X on
    vnni = core and "avx512vnni" in f
    if core:
        amx = {"amxtile", "amxint8", "amxbf16"} <= f
        onednn = ("AVX512_CORE_AMX_FP16" if amx and "amxfp16" in f else "AVX512_CORE_AMX" if amx
                  else "AVX512_CORE_FP16" if "avx512fp16" in f
                  else "AVX512_CORE_BF16" if "avx512bf16" in f
                  else "AVX512_CORE_VNNI" if vnni else "AVX512_CORE")
        mkl = ("AVX512_E4" if amx else "AVX512_E3" if "avx512bf16" in f
               else "AVX512_E2" if vnni and {"vaes", "vpclmulqdq"} <= f
               else "AVX512_E1" if vnni else "AVX512")
    elif "avx2" in f:
        onednn = ("AVX2_VNNI_2" if {"avxvnni", "avxvnniint8", "avxneconvert"} <= f
                  else "AVX2_VNNI" if "avxvnni" in f else "AVX2")
        mkl = "AVX2_E1" if "avxvnni" in f else "AVX2"
    else:  # SSE4.1 / SSE4.2 are the least oneDNN / MKL can be limited to
        onednn = "AVX" if "avx" in f else "SSE41"
        mkl = "AVX" if "avx" in f else "SSE4_2"
    aten = "avx512" if core else "avx2" if {"avx2", "fma"} <= f else "default"
    fbgemm = "AVX512_E1" if vnni else "AVX512" if core else "AVX2" if "avx2" in f else None
    return PeerLimits(mcpu, aten, onednn, fbgemm, mkl, frozenset(f))


_FEATURES_SCRIPT = """import sys
from tvm_qnn.errors import TvmQnnError
from tvm_qnn.target.x86 import check_mcpu, isa_features
try:
    check_mcpu(sys.argv[1], "x86:" + sys.argv[1])
except TvmQnnError as err:
    sys.exit(str(err))
print(' '.join(sorted(isa_features(sys.argv[1]))))
"""


def peer_limits(mcpu: str) -> PeerLimits:
    """The limits for LLVM's ``mcpu``. Until TVM is imported its features are read in a child
    process: importing TVM imports PyTorch, which must not happen before :func:`apply`."""
    if "tvm" in sys.modules:
        from tvm_qnn.target.x86 import check_mcpu, isa_features

        check_mcpu(mcpu, f"x86:{mcpu}")
        return limits_for(mcpu, isa_features(mcpu))
    done = subprocess.run([sys.executable, "-c", _FEATURES_SCRIPT, mcpu], capture_output=True,
                          text=True, env=child_env(), check=False)
    if done.returncode:
        raise SystemExit(done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                         else f"--mcpu {mcpu}: its instruction sets could not be read")
    return limits_for(mcpu, frozenset(done.stdout.split()))


def apply(limits: PeerLimits) -> bool:
    """Set the limits in ``os.environ``. False when PyTorch was imported before they were
    (then only a fresh process is sure to honour them: :func:`rerun_in_fresh_process`)."""
    env = limits.environ()
    if all(os.environ.get(k) == v for k, v in env.items()):
        return True  # set before this process started, or before it imported PyTorch
    if "torch" in sys.modules:
        return False
    os.environ.update(env)
    return True


def limit_onnxruntime(limits: PeerLimits) -> None:
    """Mask CPUID to the limits for onnxruntime, before it is imported (:func:`ort_limit` then
    says whether that worked). Called after TVM is imported: TVM installs its own SIGSEGV
    handler, which would replace the mask's (it passes other faults on to TVM's)."""
    global _ort_unlimited
    _ort_unlimited = cpuid_limit.apply(limits.features)


_ort_unlimited: str | None = "CPUID was not masked (limit_onnxruntime not called)"


def ort_limit() -> str | None:
    """None when onnxruntime is limited to the applied limits, else why it is not."""
    return _ort_unlimited


def rerun_in_fresh_process(argv: list[str], limits: PeerLimits) -> int:
    """Run ``python -m bench argv`` in a new process with the limits set; its exit code."""
    print("bench: PyTorch was imported before its ISA could be limited to "
          f"--mcpu {limits.mcpu}: running the suite in a fresh process", flush=True)
    return subprocess.call([sys.executable, "-m", "bench", *argv],
                           env={**child_env(), **limits.environ()})


def child_env() -> dict[str, str]:
    """This environment, with the checkout on the path (``tvm-qnn bench`` runs from anywhere)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


# ---------------------------------------------------------------- what the peers really use

def verify(limits: PeerLimits) -> dict:
    """What each peer library reports it uses, checked against ``limits`` (SystemExit when one
    exceeds them). Returns the record for the results' ``machine`` section."""
    import torch

    aten = torch.backends.cpu.get_cpu_capability().lower()
    onednn = onednn_isas()
    vnni = fbgemm_uses_vnni() if limits.fbgemm else None
    problems = []
    if _rank(ATEN_ORDER, aten) > _rank(ATEN_ORDER, limits.aten):
        problems.append(f"ATen reports {aten}, above {limits.aten}")
    over = [impl for impl in onednn
            if _rank(ONEDNN_ORDER, impl.rpartition(":")[2]) > _rank(ONEDNN_ORDER,
                                                                    limits.onednn.lower())]
    if over:
        problems.append(f"oneDNN created {', '.join(over)}, above {limits.onednn}")
    if vnni and limits.fbgemm != "AVX512_E1":
        problems.append(f"fbgemm used VNNI, above {limits.fbgemm}")
    ort = _verify_ort(limits, problems)
    if problems:
        raise SystemExit(f"bench: --mcpu {limits.mcpu}: the peers are not limited to its ISA: "
                         + "; ".join(problems))
    fbgemm = ("not run (it needs AVX2)" if vnni is None
              else "VNNI" if vnni else "no VNNI (its u8*s8 pair sums saturate int16)")
    return dict(
        mcpu=limits.mcpu,
        torch_aten=dict(limit=limits.aten, verified=aten),
        torch_onednn=dict(limit=limits.onednn,
                          verified=" ".join(onednn) or "unverified: no ISA-named primitive"),
        torch_fbgemm=dict(limit=limits.fbgemm or "none: engines fbgemm and x86 dropped",
                          verified=fbgemm),
        torch_mkl=dict(limit=limits.mkl, verified=mkl_dispatch(),
                       note="MKL honours its limit on Intel CPUs only"),
        torch_int8_engines=list(limits.torch_engines),
        onnxruntime=ort)


def _verify_ort(limits: PeerLimits, problems: list[str]) -> dict:
    """onnxruntime's record: CPUID as this process sees it, and whether MLAS's u8*s8 GEMM
    saturates as it must without a VNNI-class instruction set."""
    why = ort_limit()
    if why is not None:
        return dict(limit=ORT_ISA.format(why=why), verified="not limited")
    masked = set(cpuid_limit.CPUID_BITS) - limits.features
    if not cpuid_limit.hooked():  # the next CPUID would crash: nothing more is checked
        problems.append("a library replaced the CPUID mask's SIGSEGV handler")
        return {}
    seen = cpuid_limit.visible(masked)
    if seen:
        problems.append(f"CPUID still reports {', '.join(sorted(seen))}")
    exact = ort_u8s8_exact()
    if exact and "avx2" in limits.features and not limits.features & _EXACT_U8S8:
        problems.append("onnxruntime's u8*s8 GEMM did not saturate: it used VNNI or AMX")
    return dict(limit=f"{limits.onednn} (CPUID masked to {limits.mcpu}'s features)",
                verified=f"CPUID reports none of {len(masked)} masked features; u8*s8 pair "
                + ("sums exact (VNNI-class)" if exact else "sums saturate int16 (no VNNI)"))


def describe(record: dict) -> str:
    """One line of what :func:`verify` found: each peer's limit (what it reported)."""
    parts = [f"{peer}={r['limit']} ({r['verified']})" for peer, r in record.items()
             if isinstance(r, dict)]
    return f"peers limited to --mcpu {record['mcpu']}: " + " ".join(parts)


def _rank(order, name: str) -> int:
    """Position of ``name`` in ``order``; names not in it (``jit:uni``, ``gemm:jit``) rank
    lowest: they carry no ISA of their own."""
    return order.index(name) if name in order else -1


def onednn_isas() -> list[str]:
    """Implementations (``name:isa``) of the primitives oneDNN creates for a small int8 conv of
    PyTorch's ``onednn`` engine, from its verbose log."""
    import torch

    def conv():
        module, xq = _int8_conv()
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            module(xq)

    lines = _c_stdout(conv).splitlines()
    # onednn_verbose,v1,primitive,exec,cpu,<kind>,<implementation>,...
    impls = [ln.split(",")[6] for ln in lines
             if ln.startswith("onednn_verbose") and ",exec,cpu," in ln]
    return sorted({i for i in impls if i.rpartition(":")[2] in ONEDNN_ORDER})


def _int8_conv():
    import torch
    from torch.ao.nn import quantized as nnq

    saved = torch.backends.quantized.engine
    torch.backends.quantized.engine = "onednn"  # weights are prepacked for the engine set now
    try:
        with warnings.catch_warnings():  # "quantized tensor creation functions are deprecated"
            warnings.simplefilter("ignore", UserWarning)
            w = torch._make_per_tensor_quantized_tensor(
                torch.ones(16, 16, 3, 3, dtype=torch.int8), 0.05, 0)
            xq = torch._make_per_tensor_quantized_tensor(
                torch.ones(1, 16, 8, 8, dtype=torch.uint8), 0.01, 0)
        module = nnq.Conv2d(16, 16, 3, padding=1, bias=False)
        module.set_weight_bias(w, None)
        return module, xq.contiguous(memory_format=torch.channels_last)
    finally:
        torch.backends.quantized.engine = saved


def fbgemm_uses_vnni() -> bool:
    """Whether fbgemm's int8 GEMM uses VNNI: ``x = 255``, ``w = 127`` over 64 inputs is
    2 072 640 exactly (VNNI ``vpdpbusd``), 32 × 32767 = 1 048 544 where ``vpmaddubsw`` saturates
    each pair to int16 (AVX2, AVX-512 without VNNI). The output scale maps them to 200 and 101."""
    import torch
    from torch.ao.nn import quantized as nnq

    k = 64
    saved = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            w = torch._make_per_tensor_quantized_tensor(
                torch.full((1, k), 127, dtype=torch.int8), 1.0, 0)
            x = torch._make_per_tensor_quantized_tensor(
                torch.full((1, k), 255, dtype=torch.uint8), 1.0, 0)
        linear = nnq.Linear(k, 1, bias_=False)
        linear.set_weight_bias(w, None)
        linear.scale, linear.zero_point = k * 255 * 127 / 200, 0
        with torch.no_grad():
            return int(linear(x).int_repr()[0, 0]) == 200
    finally:
        torch.backends.quantized.engine = saved


def ort_u8s8_exact() -> bool:
    """Whether onnxruntime's (MLAS's) u8*s8 GEMM sums products without saturating: the
    probe of :func:`fbgemm_uses_vnni` as a ``MatMulInteger`` (int32 out): 2 072 640 with
    VNNI or AMX, 1 048 544 where ``vpmaddubsw`` saturates pairs (AVX2, AVX-512 without VNNI).
    MLAS reads CPUID at its first GEMM: call this after :func:`apply`."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .peers import ort_session

    k = 64
    weight = numpy_helper.from_array(np.full((k, 1), 127, np.int8), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w"], ["y"])], "u8s8_probe",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    sess, _ = ort_session(model, threads=1)
    (y,) = sess.run(None, {"x": np.full((1, k), 255, np.uint8)})
    return int(y[0, 0]) == 255 * 127 * k


def mkl_dispatch() -> str:
    """The processors MKL says it dispatches for (its verbose banner), e.g. ``Intel(R) Advanced
    Vector Extensions 2 (Intel(R) AVX2) enabled processors``; on other CPUs a generic name."""
    import torch

    def linear():
        with torch.no_grad(), torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
            torch.nn.Linear(16, 16, bias=False)(torch.ones(2, 16))

    for line in _c_stdout(linear).splitlines():
        if line.startswith("MKL_VERBOSE") and " for " in line:  # "... for <arch> <cpus>, Lnx"
            arch = line.split(" for ", 1)[1].split(", Lnx")[0]
            return arch.replace("Intel(R) 64 architecture", "").strip()
    return "not reported"


def _c_stdout(fn) -> str:
    """What ``fn`` writes to the C-level stdout (where oneDNN and MKL print their logs)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as out:
        os.dup2(out.fileno(), 1)
        try:
            fn()
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        out.seek(0)
        return out.read().decode(errors="replace")
