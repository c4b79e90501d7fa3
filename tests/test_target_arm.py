# SPDX-License-Identifier: Apache-2.0
"""target="arm_cpu": NEON code, cross-compiled libraries, runs on the emulated aarch64 device."""

import re
import shutil

import numpy as np
import pytest

import tvm_qnn
from tvm_qnn.target import BOARDS, ArmTarget, resolve_target
from tvm_qnn.testing.onnx_models import make_cnn_model, random_input, run_reference

needs_cross = pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
    reason="gcc-aarch64-linux-gnu / qemu-user are not installed (make sysdeps installs them)")


def _elf_machine(path) -> int:
    with open(path, "rb") as f:
        return int.from_bytes(f.read(20)[18:20], "little")


@pytest.fixture(scope="module")
def cnn():
    return make_cnn_model("qcdq", bits=2)


@pytest.mark.slow
@needs_cross
def test_aarch64_neon_code_runs_bit_exact_emulated(cnn, tmp_path):
    art = tvm_qnn.compile(cnn, target="arm_cpu")
    assert art.target.startswith("arm_cpu:rasp4b (cortex-a72")
    assert all(r["bitserial"] for r in art.layers)
    asm = art.assembly()
    assert re.search(r"\bcnt\s+v\d+\.16b", asm) and re.search(r"\buadalp\s+v\d+\.", asm)
    feeds = random_input(cnn, seed=5)
    want = run_reference(cnn, feeds)[0]
    np.testing.assert_array_equal(art.run(feeds), want)
    path = art.export_library(tmp_path / "cnn_arm.so")
    assert _elf_machine(path) == 183  # EM_AARCH64
    again = tvm_qnn.load(path)
    np.testing.assert_array_equal(again.run(feeds), want)
    with pytest.raises(tvm_qnn.TvmQnnError, match="emulation says nothing about the board"):
        art.benchmark(feeds)


@pytest.mark.skipif(shutil.which("arm-linux-gnueabihf-gcc") is None,
                    reason="gcc-arm-linux-gnueabihf is not installed (make sysdeps)")
def test_armv7_compiles_and_exports(cnn, tmp_path):
    art = tvm_qnn.compile(cnn, target="arm_cpu:rasp3b")
    path = art.export_library(tmp_path / "cnn_v7.so")
    assert _elf_machine(path) == 40  # EM_ARM
    with pytest.raises(tvm_qnn.TvmQnnError, match="no emulated device"):
        art.run(random_input(cnn))


def test_board_table_and_target_forms():
    assert resolve_target("arm_cpu").board.mcpu == "cortex-a72"
    assert resolve_target("arm_cpu:rasp5").board.mcpu == "cortex-a76"
    assert resolve_target({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                           "mcpu": "cortex-a53"}).board_name == "rasp3b-64"
    assert {b.arch for b in BOARDS.values()} == {"aarch64", "armv7"}
    with pytest.raises(tvm_qnn.TvmQnnError, match="unknown ARM board 'pi9'"):
        ArmTarget("pi9")


@pytest.mark.slow
@needs_cross
def test_rpc_device_runs_the_artifact(cnn):
    from tvm_qnn.target.arm.device import EmulatedRPCDevice, RemoteDevice

    art = tvm_qnn.compile(cnn, target="arm_cpu")
    feeds = random_input(cnn, seed=2)
    with EmulatedRPCDevice("rasp4b") as device:
        spec = f"rasp4b@127.0.0.1:{device.tracker_port}"
        assert RemoteDevice.parse(spec) == device.remote
        out = art.run_on(spec, feeds)
    np.testing.assert_array_equal(out, run_reference(cnn, feeds)[0])
    with pytest.raises(tvm_qnn.TvmQnnError, match="KEY@HOST:PORT"):
        RemoteDevice.parse("rasp4b")


@pytest.mark.slow
@needs_cross
def test_cli_device_start_registers_and_stops():
    import os
    import signal
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "tvm-qnn")
    proc = subprocess.Popen([exe, "device", "start", "--target", "arm_cpu:rasp5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert re.fullmatch(r"device: key=rasp5 tracker=127\.0\.0\.1:\d+ ready.*\n", line), line
        from tvm import rpc

        port = int(re.search(r":(\d+) ready", line).group(1))
        summary = rpc.connect_tracker("127.0.0.1", port).summary()
        assert "rasp5" in str(summary["server_info"])
    finally:
        proc.send_signal(signal.SIGINT)
        # stop() gives the server and the tracker 10 s each to exit on SIGTERM, then SIGKILL:
        # 40 s at worst. communicate(), not wait(): the pipes must be drained, or a child that
        # writes more than a pipe buffer while stopping blocks and never exits.
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]


@pytest.mark.slow
@needs_cross
def test_layer_matrix_bit_exact_in_one_emulated_process(tmp_path):
    from tvm_qnn.target.arm.emulator import EmulatedDevice
    from tvm_qnn.testing.layers import LayerKernel, random_layer
    from tvm_qnn.topi.layer import reference_output

    configs = [dict(kind="conv2d", act_bits=b, weight_bits=b, in_channels=70, out_channels=16)
               for b in (1, 2, 3, 4)]
    configs += [dict(kind="conv2d", act_bits=2, weight_bits=1, in_channels=8, out_channels=8,
                     groups=8, strides=(2, 2)),  # depthwise, strided
                dict(kind="conv2d", act_bits=8, weight_bits=8, in_channels=3, out_channels=8,
                     act_signed=True),  # an 8-bit first layer (im2col packing)
                dict(kind="conv2d", act_bits=3, weight_bits=2, in_channels=20, out_channels=24,
                     dilation=(2, 1), pads=(2, 1, 2, 1), relu=False, pow2_scales=False),
                dict(kind="dense", act_bits=1, weight_bits=1, in_channels=300, out_channels=40,
                     batch=3),
                dict(kind="dense", act_bits=4, weight_bits=2, in_channels=100, out_channels=10,
                     out_quant=False)]
    cases, refs = [], []
    for i, cfg in enumerate(configs):
        layer, xq = random_layer(size=(9, 7), seed=i, **cfg)
        kernel = LayerKernel(layer, target="arm_cpu")
        cases.append((kernel.export(tmp_path / f"k{i}.so"), kernel.arguments(xq),
                      layer.output_shape, layer.output.out_dtype))
        refs.append(reference_output(layer, xq))
    for got, want in zip(EmulatedDevice().run_kernels(cases), refs, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_layer_report_describes_the_targets_own_layout(cnn):
    """Compile-only: an arm_cpu artifact reports its byte-word weight layout, not x86's 64-bit
    words (the sizes differ where a layer's channels do not fill 64-bit words)."""
    from tvm_qnn.frontend import load_model
    from tvm_qnn.topi.layer import plan_layer
    from tvm_qnn.transform import find_layers

    arm, x86 = resolve_target("arm_cpu"), resolve_target("x86:haswell")
    layers = {m.name: m.layer for m in find_layers(load_model(cnn)["main"]) if m.layer}
    report = {r["name"]: r["packed_weight_bytes"] for r in tvm_qnn.compile(cnn, arm).layers}
    want = {name: plan_layer(layer, arm.layout).packed_weight.nbytes
            for name, layer in layers.items()}
    assert report == want
    assert any(plan_layer(layer, x86.layout).packed_weight.nbytes != want[name]
               for name, layer in layers.items())
