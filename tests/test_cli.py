# SPDX-License-Identifier: Apache-2.0
"""``tvm-qnn summary`` / ``compile`` / ``tune``: tables, greppable result lines, exit codes."""

import os
import re
import subprocess
import sys
import time

import onnx
import pytest

import tvm_qnn
from tvm_qnn import cli
from tvm_qnn.testing.onnx_models import make_cnn_model, make_conv_model


def _model(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(make_cnn_model("qcdq", bits=2), path)
    return str(path)


def test_summary_table_and_line(tmp_path, capsys):
    assert cli.main(["summary", _model(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^conv1\s+conv2d\s+W2A2\s+3,612,672\s+14,450,688\s+4,608", out, re.M)
    assert "MACs by precision: W2A2: 5,419,008, W8A8: 113,216" in out
    assert re.search(r"^summary: 4/4 layers bit-serial, BOPs \d+$", out, re.M)
    # With a target, each layer's note names its kernel there and who chose it.
    assert cli.main(["summary", _model(tmp_path), "--target", "x86:haswell"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^conv1\s+conv2d\s+W2A2\s.*\slut \(cost model\)$", out, re.M), out


def test_compile_writes_a_loadable_library(tmp_path, capsys):
    out_path = tmp_path / "m.so"
    assert cli.main(["compile", _model(tmp_path), "--target", "x86", "-o", str(out_path),
                     "--threads", "1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"compiled: \S+m\.so target=x86 \(.*\) bitserial_layers=4/4 "
                        r"seconds=[\d.]+", line), line
    loaded = tvm_qnn.load(out_path)
    assert loaded.inputs[0].name == "image" and loaded.threads == 1


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert cli.main(["summary", str(tmp_path / "nope.onnx")]) == 2
    assert "error: no model file" in capsys.readouterr().err
    # Targets without an emulated device have nothing to serve (armv7: no TVM wheels).
    for target in ("x86", "arm_cpu:rasp3b"):
        assert cli.main(["device", "start", "--target", target]) == 2
        assert "no emulated device to serve over RPC" in capsys.readouterr().err


def test_device_start_without_its_tracker_fails_at_once_and_leaves_no_process(capsys):
    """Was: a traceback after 60 s of retries, and the emulated board's server left running."""
    from tvm_qnn.testing.processes import descendants

    before = {pid for pid, _ in descendants()}
    start = time.monotonic()
    assert cli.main(["device", "start", "--target", "arm_cpu", "--tracker-port", "1"]) == 2
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert err == "error: no TVM RPC tracker answers at 127.0.0.1:1 (Connection refused)\n"
    assert [p for p in descendants() if p[0] not in before] == []


def _exit_code(argv: list[str]) -> int:
    """main's return value, or the code of argparse's SystemExit (a usage error)."""
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        return exit_.code


# Each: argv ({m}: a small model, {t}: tmp_path) and what the one-line error must say.
MISUSE = [
    (["compile", "{m}", "--target", "{{bad json", "-o", "{t}/m.so"],
     r"argument --target: '\{bad json' is not valid JSON"),
    (["compile", "{m}", "--target", "accel:{t}/missing.json", "-o", "{t}/m.so"],
     r"error: accelerator config .*missing.json: cannot read it \(No such file"),
    (["compile", "{m}", "--target", "accel:{t}/garbage.json", "-o", "{t}/m.so"],
     r"error: accelerator config .*garbage.json: cannot read it \(Expecting value"),
    (["compile", "{m}", "-o", "{t}/nodir/m.so"],
     r"argument -o/--output: cannot write .*nodir/m.so': the folder .*nodir' does not exist"),
    (["compile", "{m}", "-o", "{t}/adir"],
     r"argument -o/--output: library path .*adir' is a directory"),
    (["compile", "{m}", "-o", "{t}/model"],
     r"argument -o/--output: library path .*model': the file name must end in .so or .tar"),
    (["tune", "{m}", "--work-dir", "{t}/afile"],
     r"argument --work-dir: .*afile' is a file; the tuning work dir is a directory"),
    (["sim", "--config", "{t}/missing.json"],
     r"argument --config: .*missing.json': no such file"),
    (["sim", "--config", "{t}/garbage.json"], r"error: accelerator config .*garbage.json: cannot"),
    (["sim", "--config", "{t}/list.json"],
     r"error: accelerator config .*list.json: a JSON object .* not a list"),
    (["sim", "--config", "{t}/negative.json"],
     r"error: accelerator config .*negative.json: bad accelerator config: block_out must be >= 1"),
    (["sim", "--config", "{t}/string.json"],
     r"error: accelerator config .*string.json: block_out='16': expected an integer"),
    (["sim", "--bits", "abc"],
     r"argument --bits: 'abc': expected WEIGHTxACTIVATION bits, each 1..8"),
    (["sim", "--bits", "9x9"], r"argument --bits: '9x9': expected"),
    (["sim", "--bits", "0x0"], r"argument --bits: '0x0': expected"),
    (["sim", "--layers", "bogus"],
     r"argument --layers: invalid choice: 'bogus' \(choose from 'conv56'"),
    (["train", "--precision", "w9a9"], r"argument --precision: precision 'w9a9': fp32 or wKaM"),
    (["train", "--precision", "bogus"], r"argument --precision: precision 'bogus': fp32 or wKaM"),
    (["train", "--init-from", "{t}/missing.pt"],
     r"argument --init-from: .*missing.pt': no such file"),
    (["summary", "{m}", "--shape", "x=1,64"],
     r"error: shapes\['x'\] = \(1, 64\): input 'x' has 4 dimensions \[1, 8, 9, 9\]; give 4 "),
    (["summary", "{m}", "--shape", "y=1,8,9,9"], r"error: shapes names \['y'\], not inputs"),
    (["summary", "{m}", "--shape", "x=1,0,9,9"], r"argument --shape: 'x=1,0,9,9': expected NAME="),
    # Was: 160 s of candidates failing one by one, then "tuned" and exit 0.
    (["tune", "{m}", "--runner", "rasp4b@127.0.0.1:1", "--timeout", "5"],
     r"error: no TVM RPC tracker answers at 127\.0\.0\.1:1 \(Connection refused\)"),
]


@pytest.mark.parametrize("argv, message", MISUSE, ids=[" ".join(a[:3]) for a, _ in MISUSE])
def test_misuse_is_a_clear_error_not_a_traceback(tmp_path, capsys, argv, message):
    """Exit code 2 and one message naming the bad value, from argparse (bad arguments) or
    from the library (what it refuses); never a Python traceback."""
    model = tmp_path / "conv.onnx"
    onnx.save(make_conv_model("qcdq", act_bits=2), model)
    (tmp_path / "garbage.json").write_text("garbage{")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "negative.json").write_text('{"block_out": -1}')
    (tmp_path / "string.json").write_text('{"block_out": "16"}')
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    argv = [a.format(m=model, t=tmp_path) for a in argv]
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_os_and_value_errors_of_a_command_are_one_line(monkeypatch, capsys):
    """What reading or writing the user's files raises is ``error: ...`` (with the traceback
    under -v); any other exception is a bug and propagates."""
    def fails(args):
        open("/nonexistent/out.json", "w")

    monkeypatch.setattr(cli, "_cmd_summary", fails)
    assert cli.main(["summary", "m.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: [Errno 2] No such file or directory: '/nonexistent/out.json'")
    assert "Traceback" not in err
    assert cli.main(["-v", "summary", "m.onnx"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setattr(cli, "_cmd_summary", lambda args: {}["bug"])
    with pytest.raises(KeyError):
        cli.main(["summary", "m.onnx"])


def test_console_script_and_verbose_log(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "tvm-qnn")
    proc = subprocess.run([exe, "-v", "summary", _model(tmp_path)], capture_output=True,
                          text=True, timeout=300, check=True)
    assert "summary: 4/4" in proc.stdout


@pytest.mark.parametrize("command, option", [("train", "--precision"), ("bench", "--layers")])
def test_verbose_before_a_command_with_its_own_arguments(command, option, capsys):
    """``-v train`` was an AttributeError: train and bench parse their own arguments."""
    with pytest.raises(SystemExit) as done:
        cli.main(["-v", command, "--help"])
    assert done.value.code == 0
    assert option in capsys.readouterr().out


@pytest.mark.slow
def test_tune_then_compile_with_the_database(tmp_path, capsys):
    # One trial: the default template measured and recorded, the search itself skipped.
    db = tmp_path / "db"
    assert cli.main(["tune", _model(tmp_path), "--trials", "1", "--work-dir", str(db),
                     "--keep-best"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^tuned: {re.escape(str(db))} tasks=4 seconds=[\d.]+$", out, re.M)
    # One record per kernel tuned: the 4 of the model, and where the CPU has two kernel
    # families the other family's kernel of each layer that fits both.
    kept = re.search(r"kept the records compile may use: (\d+) -> (\d+) records", out)
    assert kept and kept[1] == kept[2] and int(kept[1]) >= 4, out
    # Only the default template's record: compile keeps the default, and the row says so.
    assert re.search(r"^conv1\s+conv2d\s+W2A2\s+1\s+[\d.]+\s+[\d.]+\s+1\.00  \(default kept",
                     out, re.M), out
    assert cli.main(["compile", _model(tmp_path), "-o", str(tmp_path / "t.so"),
                     "--tuning-db", str(db)]) == 0
    assert cli.main(["compile", _model(tmp_path), "-o", str(tmp_path / "u.so"),
                     "--tuning-db", str(tmp_path / "none")]) == 2
    assert "no such directory" in capsys.readouterr().err
