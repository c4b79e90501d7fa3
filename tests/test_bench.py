# SPDX-License-Identifier: Apache-2.0
"""Smoke test of the x86 benchmark suite (``python -m bench``): one small case, tiny rounds,
and the int8 peers checked against a numpy int8 reference (no speed is asserted)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def _row(line: str) -> dict:
    body, _, isa = line.partition(" isa=")
    row = dict(kv.split("=", 1) for kv in body.split(": ", 1)[1].split())
    row["isa"] = isa
    return row


def test_suite_prints_a_parsable_line_and_writes_json(tmp_path, capsys):
    from bench.__main__ import main

    out = tmp_path / "bench.json"
    assert main(["--quick", "--layers", "conv8q", "--bits", "1x2", "--threads", "1",
                 "--json", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("bench: layer=")]
    assert len(lines) == 1
    row = _row(lines[0])
    assert row["layer"] == "conv8q" and row["bits"] == "W1A2" and row["threads"] == "1"
    for key in ("tvm_qnn_ms", "torch_fp32_ms", "torch_int8_ms", "ort_int8_ms", "roofline_ms",
                "of_roofline", "x_fp32", "x_int8"):
        value = float(row[key])
        assert math.isfinite(value) and value > 0, (key, row[key])
    # The engine x_int8 is against: the faster of PyTorch's best and onnxruntime.
    torch_won = float(row["torch_int8_ms"]) <= float(row["ort_int8_ms"])
    assert row["int8_engine"].startswith("torch:" if torch_won else "onnxruntime:")
    assert "QLinearConv" in row["ort_op"]  # the peer runs its fused int8 kernel
    assert row["isa"]
    result = json.loads(out.read_text())
    assert result["layers"][0]["layer"] == "conv8q"
    assert result["roofline_bit_macs_per_s"]["1"] > 0


def test_brevitas_networks_are_timed_next_to_their_float_and_int8_peers(tmp_path, capsys):
    pytest.importorskip("brevitas")
    from bench.__main__ import main

    out = tmp_path / "bench.json"
    assert main(["--quick", "--layers", "--brevitas", "tfc_2w2a", "--threads", "1",
                 "--json", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines()
             if ln.startswith("bench: brevitas=")]
    (row,) = [_row(ln) for ln in lines]
    assert row["brevitas"] == "tfc_2w2a" and row["bitserial_layers"] == "4/4"
    for key in ("tvm_qnn_ms", "ort_fp32_ms", "ort_int8_ms", "roofline_ms"):
        assert math.isfinite(float(row[key])) and float(row[key]) > 0, (key, row[key])
    assert json.loads(out.read_text())["brevitas"][0]["brevitas"] == "tfc_2w2a"


@pytest.mark.parametrize("mcpu,want", [
    ("haswell", ("avx2", "AVX2", "AVX2", "AVX2")),
    ("cascadelake", ("avx512", "AVX512_CORE_VNNI", "AVX512_E1", "AVX512_E1")),
    ("sapphirerapids", ("avx512", "AVX512_CORE_AMX", "AVX512_E1", "AVX512_E4")),
    ("x86-64", ("default", "SSE41", None, "SSE4_2")),
])
def test_peer_limits_follow_the_mcpu_isa(mcpu, want):
    from bench import peer_isa

    limits = peer_isa.peer_limits(mcpu)
    assert (limits.aten, limits.onednn, limits.fbgemm, limits.mkl) == want
    # fbgemm runs nothing below AVX2: its engines are dropped rather than left unlimited.
    assert ("fbgemm" in limits.torch_engines) == (want[2] is not None)


def test_limits_set_after_pytorch_was_imported_ask_for_a_fresh_process(monkeypatch):
    from bench import peer_isa

    limits = peer_isa.peer_limits("haswell")
    for key in limits.environ():
        monkeypatch.delenv(key, raising=False)
    assert "torch" in sys.modules  # imported by this file's importorskip
    assert not peer_isa.apply(limits)
    assert not any(key in os.environ for key in limits.environ())


def test_mcpu_limits_the_pytorch_peers_to_its_isa(tmp_path):
    """``--mcpu haswell`` in a fresh process: ATen, oneDNN and fbgemm report AVX2 at most (on
    any x86 host that runs AVX2 code, an AVX2-only one included); onnxruntime is limited by
    masking CPUID where the CPU has CPUID faulting, else reported as the host's."""
    from bench.cpuid_limit import why_no_faulting
    from tvm_qnn.target.x86 import X86Target

    if X86Target(mcpu="haswell").why_not_here():
        pytest.skip("this CPU does not run haswell (AVX2) code")
    out = tmp_path / "bench.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--layers", "dense4q",
                           "--bits", "1x1", "--mcpu", "haswell", "--json", str(out)],
                          cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    peer_isa = json.loads(out.read_text())["machine"]["peer_isa"]
    assert peer_isa["torch_aten"] == {"limit": "avx2", "verified": "avx2"}
    onednn = peer_isa["torch_onednn"]["verified"]
    assert onednn.startswith("unverified") or all(
        impl.rpartition(":")[2] in ("sse41", "avx", "avx2") for impl in onednn.split()), onednn
    assert peer_isa["torch_fbgemm"]["verified"].startswith("no VNNI")
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("bench: layer=")]
    row = _row(line)
    assert row["torch_isa"] == "AVX2"
    ort = peer_isa["onnxruntime"]
    if why_no_faulting() is None:
        assert ort["limit"].startswith("AVX2 (CPUID masked"), ort
        assert ort["verified"].endswith("saturate int16 (no VNNI)"), ort
        assert row["ort_isa"] == "AVX2"
    else:
        assert "cannot be limited" in ort["limit"] and ort["verified"] == "not limited"
        assert row["ort_isa"] == "host"


def test_bits_are_weight_by_activation():
    from bench.bench_layers import parse_bits

    assert parse_bits("1x2") == (1, 2)
    assert parse_bits("W2A1") == (2, 1)
    assert parse_bits("2") == (2, 2)


def test_chart_has_a_panel_per_bits_and_threads(tmp_path):
    """``--png``: one panel per (bits, threads), a PNG written (rows as the suite makes them)."""
    pytest.importorskip("matplotlib")
    from bench.chart import plot

    rows = [dict(layer=layer, bits=bits, threads=threads, tvm_qnn_ms=0.1, x_fp32=8.0,
                 torch_int8_ms=0.4, ort_int8_ms=0.5, of_roofline=0.9, isa="vpshufb lut")
            for layer in ("conv56", "dense1") for bits in ("W1A1", "W2A2") for threads in (1, 2)]
    heights = []
    for name, sel in (("all", rows), ("one", [r for r in rows if r["threads"] == 1
                                              and r["bits"] == "W1A1"])):
        path = tmp_path / "out" / f"{name}.png"
        assert plot(sel, str(path))
        with open(path, "rb") as f:
            head = f.read(24)
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        heights.append(int.from_bytes(head[20:24], "big"))  # the IHDR chunk's height
    assert heights[0] == 4 * heights[1], heights


@pytest.mark.parametrize("kind,cin,cout,size", [("conv2d", 16, 24, 5), ("dense", 96, 40, 3)])
def test_int8_peers_compute_the_layer(kind, cin, cout, size):
    from bench import peers

    layer = peers.int8_layer(kind, cin, cout, size, seed=1)
    want = peers.int8_reference(layer)
    assert 0 < want.std()  # the output spreads over its range: a real check
    got = {"ort": peers.ort_int8_run(layer)}
    import torch

    got.update({e: peers.torch_int8_run(layer, e) for e in peers.TORCH_ENGINES
                if e in torch.backends.quantized.supported_engines})
    for name, y in got.items():
        assert y.shape == want.shape, name
        # Requantization may round a tie the other way: at most one code apart.
        assert np.abs(y.astype(int) - want).max() <= 1, name


def test_profile_layer_prints_its_parts(capsys):
    from bench import profile_layer

    assert profile_layer.main(["conv7", "--bits", "1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    fields = dict(f.split("=") for f in line.split()[1:])
    assert fields["layer"] == "conv7"
    assert all(float(fields[k]) > 0 for k in ("whole_ms", "pack_ms", "epilogue_nchw_ms",
                                                "epilogue_nhwc_ms"))


def test_kernel_families_checks_and_times_both_kernels():
    """The measurement behind the dot-kernel thresholds: both families of one case are
    checked against the integer reference (inside ``measure``) and timed."""
    from bench import kernel_families
    from tvm_qnn.target import resolve_target

    host = resolve_target("x86").mcpu
    row = kernel_families.measure(host, "conv7", (2, 2), [None, (1, 1, 1)], rounds=1)
    assert row["popcount_ms"] > 0 and row["dot_ms"] > 0 and row["dot_ms_1x1x1"] > 0
    assert row["dot_x"] == row["popcount_ms"] / min(row["dot_ms"], row["dot_ms_1x1x1"])


@pytest.mark.parametrize("mcpu,lanes", [("haswell", 32), ("skylake-avx512", 64)])
def test_byte_word_classes_get_the_byte_word_roofline_probe(mcpu, lanes):
    """Targets whose kernels use byte words are measured against a byte-word probe (the
    64-bit one put their layers above 1.0 of the roofline); its sums match numpy."""
    from bench import roofline
    from tvm_qnn.target import X86Target

    target = X86Target(mcpu=mcpu)
    assert roofline.probe_byte_lanes(target) == lanes
    assert roofline.probe_byte_lanes(X86Target(mcpu="znver4")) is None  # VPOPCNTDQ: uint64
    if target.missing_features():
        pytest.skip(f"this CPU cannot run {mcpu} code: {target.missing_features()}")
    # measure() raises if the probe's sums differ from the numpy reference.
    res = roofline.measure(1, repeats=40, rounds=1, repeat=1, number=1, target=target)
    assert res["word_bits"] == 8 and res["isa"] == "vpshufb lut" and res["bit_macs_per_s"] > 0


def test_several_thread_counts_run_in_processes_of_their_own(tmp_path):
    """``--threads 1 2``: each count alone (one process sized for 2 threads slowed its
    1-thread figures), the results merged into one JSON."""
    from bench.__main__ import main

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    out = tmp_path / "both.json"
    assert main(["--quick", "--layers", "conv8q", "--bits", "1x1", "--threads", "1", "2",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert sorted(row["threads"] for row in result["layers"]) == [1, 2]
    assert sorted(result["roofline_bit_macs_per_s"]) == ["1", "2"]
