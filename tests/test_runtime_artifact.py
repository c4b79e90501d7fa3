# SPDX-License-Identifier: Apache-2.0
"""The compiled artifact: run, benchmark, export/load, the code it contains."""

import os
import shutil
import stat

import numpy as np
import pytest

import tvm_qnn
from tvm_qnn.errors import InputError, LibraryFileError
from tvm_qnn.target.x86 import host_cpu_flags
from tvm_qnn.testing.onnx_models import make_conv_model, random_input


@pytest.fixture(scope="module")
def conv_art():
    model = make_conv_model("qcdq", act_bits=2, weight_bits=2, in_ch=64, out_ch=64,
                            size=(8, 8), relu=True)
    return model, tvm_qnn.compile(model, target="x86")


def test_run_accepts_positional_keyword_and_dict(conv_art):
    model, art = conv_art
    feeds = random_input(model)
    a = art.run(feeds["x"])
    np.testing.assert_array_equal(a, art.run(x=feeds["x"]))
    np.testing.assert_array_equal(a, art.run(feeds))


def test_bad_inputs_are_named(conv_art):
    _, art = conv_art
    with pytest.raises(tvm_qnn.TvmQnnError, match=r"input 'x' has shape \(1, 3\)"):
        art.run(np.zeros((1, 3), "float32"))
    with pytest.raises(tvm_qnn.TvmQnnError, match="missing inputs"):
        art.run(y=np.zeros((1, 64, 8, 8), "float32"))
    x = np.zeros((1, 64, 8, 8), "float32")
    with pytest.raises(InputError, match=r"missing inputs \[\], unknown inputs \['y'\]"):
        art.run({"x": x, "y": x})  # a misspelt or extra name was ignored


@pytest.mark.parametrize("value, problem", [
    (np.zeros((1, 64, 8, 8), complex), "got an array of complex128; it takes float or integer"),
    (np.zeros((1, 64, 8, 8), bool), "got an array of bool"),
    (np.zeros((1, 64, 8, 8), object), "got an array of object"),
    (np.full((1, 64, 8, 8), "1"), "got an array of <U1"),
    (np.full((1, 64, 8, 8), 2**24 + 1, np.int64),
     r"value 16777217 \(int64\) is not exact in float32"),
    (np.where(np.arange(64 * 64).reshape(1, 64, 8, 8) == 7, np.nan, 0.5), "holds nan"),
    (np.full((1, 64, 8, 8), -np.inf, np.float32), "holds -inf"),
])
def test_float_inputs_are_checked_not_coerced(conv_art, value, problem):
    _, art = conv_art
    with pytest.raises(InputError, match=rf"input 'x' \(float32\): {problem}"):
        art.run(value)


def test_float_inputs_take_floats_and_exact_integers(conv_art):
    model, art = conv_art
    x = random_input(model)["x"]
    want = art.run(x)
    np.testing.assert_array_equal(art.run(x.astype(np.float64)), want)
    codes = np.arange(64 * 64).reshape(1, 64, 8, 8) % 3
    np.testing.assert_array_equal(art.run(codes), art.run(codes.astype(np.float32)))


def test_integer_inputs_refuse_values_out_of_range():
    """256 into a uint8 input wrapped to 0 before: refused, as are floats."""
    model = make_conv_model("integer", act_bits=8, weight_bits=2)
    art = tvm_qnn.compile(model, target="x86")
    x = random_input(model)["x"]
    assert x.dtype == np.uint8
    want = art.run(x)
    np.testing.assert_array_equal(art.run(x.astype(np.int64)), want)  # in range: taken
    for bad, problem in ((256, r"value 256 is outside its range \[0, 255\]"),
                         (-1, r"value -1 is outside")):
        y = x.astype(np.int64)
        y[0, 0, 0, 0] = bad
        with pytest.raises(InputError, match=rf"input 'x' \(uint8\): {problem}"):
            art.run(y)
    with pytest.raises(InputError, match="got an array of float32; it takes integer arrays"):
        art.run(x.astype(np.float32))


def test_benchmark_is_a_positive_median(conv_art):
    model, art = conv_art
    t = art.benchmark(random_input(model)["x"], number=3, repeat=3)
    assert 0 < t < 1.0


def test_export_and_load_round_trip(conv_art, tmp_path):
    model, art = conv_art
    path = art.export_library(tmp_path / "conv.so")
    again = tvm_qnn.load(path)
    x = random_input(model, seed=3)["x"]
    np.testing.assert_array_equal(again.run(x), art.run(x))
    assert again.layers == art.layers and again.inputs == art.inputs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_a_loaded_artifact_exports_a_copy_of_its_library(conv_art, tmp_path):
    """A loaded library has no code to write again: export copies it, with its description;
    a library changed on disk since it was loaded is refused, and the target keeps nothing."""
    model, art = conv_art
    loaded = tvm_qnn.load(art.export_library(tmp_path / "conv.so"))
    copy = tvm_qnn.load(loaded.export_library(tmp_path / "copy.so"))
    x = random_input(model, seed=3)["x"]
    np.testing.assert_array_equal(copy.run(x), art.run(x))
    assert (tmp_path / "copy.so").read_bytes() == (tmp_path / "conv.so").read_bytes()
    with open(tmp_path / "conv.so", "ab") as f:
        f.write(b"\0")
    with pytest.raises(tvm_qnn.TvmQnnError, match="changed since it was loaded"):
        loaded.export_library(tmp_path / "again.so")
    assert not (tmp_path / "again.so").exists()


def test_load_errors(tmp_path):
    with pytest.raises(tvm_qnn.TvmQnnError, match="no compiled model"):
        tvm_qnn.load(tmp_path / "missing.so")


@pytest.fixture(scope="module")
def small_art():
    return tvm_qnn.compile(make_conv_model("qcdq", act_bits=2, weight_bits=2), target="x86")


def test_exported_files_follow_the_umask(small_art, tmp_path):
    """As a plain write and a linker would: 0644 and 0755 under umask 022, not tempfile's
    0600."""
    old = os.umask(0o022)
    try:
        path = small_art.export_library(tmp_path / "m.so")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(path + ".json").st_mode) == 0o644
        os.umask(0o077)
        small_art.export_library(path)  # replacing a pair: the modes of the new files
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path + ".json").st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_failed_export_keeps_the_previous_pair(small_art, conv_art, tmp_path, monkeypatch):
    """The description is written before either file is replaced: when that fails, the old
    library and its description are both still there, and still load."""
    import json

    path = small_art.export_library(tmp_path / "m.so")
    before = {p: open(p, "rb").read() for p in (path, path + ".json")}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", full_disk)
    with pytest.raises(LibraryFileError, match="cannot write .*m.so: No space left"):
        conv_art[1].export_library(path)
    monkeypatch.undo()
    assert {p: open(p, "rb").read() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.so", "m.so.json"]
    assert tvm_qnn.load(path).inputs == small_art.inputs


def test_load_refuses_a_library_its_description_does_not_describe(small_art, conv_art,
                                                                    tmp_path):
    """A pair torn by a crash between the renames (new .so, old .json), and truncated
    libraries, are refused by size and hash before dlopen (which could crash on them)."""
    path = small_art.export_library(tmp_path / "a.so")
    other = conv_art[1].export_library(tmp_path / "b.so")
    shutil.copy(other, path)
    with pytest.raises(LibraryFileError, match="a.so has .* bytes; .*a.so.json describes"):
        tvm_qnn.load(path)
    whole = open(other, "rb").read()
    for size in (0, 64, len(whole) // 2):
        with open(path, "wb") as f:
            f.write(whole[:size])
        shutil.copy(other + ".json", path + ".json")
        with pytest.raises(LibraryFileError, match=f"a.so has {size} bytes"):
            tvm_qnn.load(path)
    # Same size, other bytes: the hash tells.
    with open(path, "wb") as f:
        f.write(whole[:-1] + bytes([whole[-1] ^ 1]))
    with pytest.raises(LibraryFileError, match="SHA-256 differs"):
        tvm_qnn.load(path)


def test_a_description_from_before_digests_still_loads_and_truncation_is_caught(small_art,
                                                                                 tmp_path):
    """Descriptions written before the size and hash were recorded: the library loads; a
    truncated one is refused by its ELF section table, before dlopen."""
    import json

    path = small_art.export_library(tmp_path / "m.so")
    with open(path + ".json", encoding="utf-8") as f:
        meta = json.load(f)
    del meta["library"]
    with open(path + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f)
    # Loaded from a copy: cutting a library this process has mapped would crash it later.
    whole = tmp_path / "whole.so"
    shutil.copy(path, whole)
    shutil.copy(path + ".json", str(whole) + ".json")
    assert tvm_qnn.load(whole).inputs == small_art.inputs
    size = os.path.getsize(path)
    for keep in (0, 64, size // 2, size - 1):
        os.truncate(path, keep)
        with pytest.raises(LibraryFileError, match="m.so: not a whole shared library"):
            tvm_qnn.load(path)


@pytest.mark.parametrize("text, problem", [
    ("{", "Expecting property name"),
    ("[]", "a JSON list, not an object"),
    ('{"target": "x86", "layers": []}', "missing key 'inputs'"),
    ('{"inputs": [{"name": "x", "shape": "1,2", "dtype": "int8"}], "target": "x86", '
     '"layers": []}', "bad input entry"),
])
def test_load_names_a_bad_description(small_art, tmp_path, text, problem):
    path = small_art.export_library(tmp_path / "m.so")
    with open(path + ".json", "w", encoding="utf-8") as f:
        f.write(text)
    with pytest.raises(LibraryFileError, match=rf"m.so.json: not a description .*{problem}"):
        tvm_qnn.load(path)


@pytest.mark.parametrize("name, problem", [
    ("missing/m.so", "the folder .*missing' does not exist"),
    ("folder.so", "is a directory"),
    ("model", "must end in .so or .tar"),
])
def test_export_to_a_path_it_cannot_use_says_why(small_art, tmp_path, name, problem):
    (tmp_path / "folder.so").mkdir()
    with pytest.raises(LibraryFileError, match=problem):
        small_art.export_library(tmp_path / name)
    if name == "model":
        with pytest.raises(LibraryFileError, match=problem):
            tvm_qnn.load(tmp_path / name)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_into_a_read_only_folder(small_art, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(LibraryFileError, match="cannot write .*Permission denied"):
        small_art.export_library(folder / "m.so")


def test_export_removes_the_temporary_files_of_a_killed_export(small_art, tmp_path):
    """kill -9 during export leaves ``.tmp-tvm_qnn-<pid>-...`` files; the next export of the
    same name removes those whose process is gone, and nothing else."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = [f".tmp-tvm_qnn-{dead}-0badf00d-m.so", f".tmp-tvm_qnn-{dead}-0badf00d-m.so.json"]
    kept = [f".tmp-tvm_qnn-{dead}-0badf00d-other.so",  # another target's
            f".tmp-tvm_qnn-{os.getpid()}-0badf00d-m.so",  # a live writer's
            ".tmp-m.so", "m.so.bak"]  # not ours
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"partial")
    scratch = tmp_path / f".tmp-tvm_qnn-{dead}-0badcafe-m.so"  # the folder of its objects
    scratch.mkdir()
    (scratch / "lib0.o").write_bytes(b"partial")
    small_art.export_library(tmp_path / "m.so")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["m.so", "m.so.json"])


def test_a_disk_without_room_for_the_objects_is_refused_before_llvm_writes(
        small_art, conv_art, tmp_path, monkeypatch):
    """LLVM ends the process on a full disk (no exception): the disk the objects go to is
    checked first. Here its free space is faked (a real full disk: the next test)."""
    from tvm_qnn.runtime import library

    path = small_art.export_library(tmp_path / "m.so")
    before = {p: open(p, "rb").read() for p in (path, path + ".json")}
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(library.shutil, "disk_usage",
                        lambda p: usage._replace(free=32 << 10))
    with pytest.raises(LibraryFileError, match=r"cannot write .*/m.so: 32 KiB free on its disk, "
                                               r"and exporting needs up to \d+ KiB there"):
        conv_art[1].export_library(path)
    monkeypatch.undo()
    assert {p: open(p, "rb").read() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.so", "m.so.json"]


_EXPORT_TO_A_FULL_DISK = """
import os, shutil, sys, tempfile
import tvm_qnn
from tvm_qnn.testing.onnx_models import make_conv_model
disk, elsewhere = sys.argv[1:]
small = tvm_qnn.compile(make_conv_model("qcdq", act_bits=2, weight_bits=2))
big = tvm_qnn.compile(make_conv_model("qcdq", act_bits=2, weight_bits=2, in_ch=64, out_ch=64,
                                      size=(8, 8)))
with tempfile.TemporaryDirectory(dir=elsewhere) as w:  # the sizes of big's files
    big.module.export_library(os.path.join(w, "big.so"), workspace_dir=w)
    objects = sum(os.path.getsize(os.path.join(w, f)) for f in os.listdir(w) if f[-2:] == ".o")
    library = os.path.getsize(os.path.join(w, "big.so"))
path = small.export_library(os.path.join(disk, "m.so"))
before = {p: open(p, "rb").read() for p in (path, path + ".json")}
real_usage = shutil.disk_usage
# Room left: too little for the bound of the objects (refused by the check), then room for
# the objects but not the library (the check told it is enough: the linker fails).
for case, leave in (("check", 32 << 10), ("linker", objects + library // 2)):
    filler = os.path.join(disk, "filler")
    if os.path.exists(filler):
        os.remove(filler)
    with open(filler, "wb") as f:
        f.write(bytes(max(0, real_usage(disk).free - leave)))
    if case == "linker":
        shutil.disk_usage = lambda p: real_usage(p)._replace(free=1 << 40)
    try:
        big.export_library(path)
        print(case, "exported", flush=True)
    except tvm_qnn.TvmQnnError as err:
        print(case, "ERROR", type(err).__name__, err, flush=True)
    shutil.disk_usage = real_usage
    print(case, "intact", {p: open(p, "rb").read() for p in before} == before, flush=True)
    # (onnxruntime's import may drop its telemetry session file .ses into TMPDIR, this disk)
    print(case, "files", ",".join(sorted(set(os.listdir(disk)) - {".ses"})), flush=True)
    print(case, "loads", tvm_qnn.load(path).inputs == small.inputs, flush=True)
"""


def test_export_to_a_full_disk_is_an_error_and_keeps_the_previous_pair(tmp_path):
    """On a real full file system (a 1 MiB tmpfs, also the temporary folder): LLVM used to
    write the objects into $TMPDIR and end the process there (``LLVM ERROR: IO failure on
    output stream: No space left on device``), and the linker's error was a RuntimeError."""
    import subprocess
    import sys

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _EXPORT_TO_A_FULL_DISK, str(disk), str(tmp_path)],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "TMPDIR": str(disk)})
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    out = done.stdout.splitlines()
    check = next(line for line in out if line.startswith("check ERROR"))
    assert f"LibraryFileError cannot write {disk}/m.so: " in check
    assert "KiB free on its disk, and exporting needs up to" in check
    linker = next(line for line in out if line.startswith("linker ERROR"))
    assert f"LibraryFileError cannot write {disk}/m.so: " in linker
    assert "No space left on device" in linker
    for case in ("check", "linker"):
        assert f"{case} intact True" in out and f"{case} loads True" in out
        assert f"{case} files filler,m.so,m.so.json" in out


def test_avx2_target_compiles_without_avx512():
    # W1A2: two branches stay on popcounts on AVX2 (W2A2 would take the int8-dot kernel).
    model = make_conv_model("qcdq", act_bits=2, weight_bits=1, in_ch=64, out_ch=16)
    art = tvm_qnn.compile(model, target={"kind": "llvm", "mcpu": "haswell"})
    asm = art.assembly()
    assert "zmm" not in asm and "vpshufb" in asm  # popcount by nibble lookup on AVX2
    if "avx2" in host_cpu_flags():
        feeds = random_input(model)
        ref = tvm_qnn.compile(model).run(feeds)
        np.testing.assert_array_equal(art.run(feeds), ref)


def _x86_cpu_this_host_cannot_run():
    """An x86 CPU whose instruction set this host lacks, or None (a host that has them all)."""
    from tvm_qnn.target import resolve_target

    for mcpu in ("sapphirerapids", "znver5", "znver4", "icelake-server", "skylake-avx512",
                 "alderlake"):
        if not resolve_target(f"x86:{mcpu}").runs_here():
            return mcpu
    return None


def test_code_for_a_cpu_this_host_lacks_is_refused_not_run(tmp_path):
    """Running AVX-512 code on an AVX2 CPU would end the process (SIGILL): it is refused with
    the missing extensions named, also after export and load; tuning it here is refused too."""
    mcpu = _x86_cpu_this_host_cannot_run()
    if mcpu is None:
        pytest.skip("this CPU has the instruction sets of every x86 CPU tried")
    model = make_conv_model("qcdq", act_bits=2, weight_bits=2)
    art = tvm_qnn.compile(model, target=f"x86:{mcpu}")
    x = random_input(model)["x"]
    for call in (art.run, art.benchmark):
        with pytest.raises(tvm_qnn.TvmQnnError, match="cannot run on this host .this CPU has no"):
            call(x)
    loaded = tvm_qnn.load(art.export_library(tmp_path / "other_cpu.so"))
    with pytest.raises(tvm_qnn.TvmQnnError, match="cannot run on this host"):
        loaded.run(x)
    with pytest.raises(tvm_qnn.TvmQnnError, match="tune on a device that can, over TVM RPC"):
        tvm_qnn.tune(model, f"x86:{mcpu}", trials=1, work_dir=tmp_path / "db")


def test_threads_default_override_and_round_trip(conv_art, tmp_path, monkeypatch):
    """Artifacts run on the physical cores unless told otherwise; running one does not pin the
    calling thread (TVM's default would); the choice survives export and load."""
    import os

    from tvm_qnn.runtime.threads import default_threads, physical_cores, use_threads

    model, art = conv_art
    x = random_input(model, seed=1)["x"]
    assert 1 <= physical_cores() <= len(os.sched_getaffinity(0))
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    assert default_threads() == physical_cores()
    monkeypatch.setenv("TVM_NUM_THREADS", "3")
    assert default_threads() == 3
    cpus = os.sched_getaffinity(0)
    want = art.run(x)
    for threads in (1, len(cpus)):
        np.testing.assert_array_equal(art.run(x, threads=threads), want)
        assert art.benchmark(x, threads=threads, number=1, repeat=1) > 0
        assert os.sched_getaffinity(0) == cpus
    with pytest.raises(tvm_qnn.TvmQnnError, match="threads=0: at least 1"):
        use_threads(0)
    one = tvm_qnn.compile(model, target="x86", threads=1)
    assert one.threads == 1
    assert tvm_qnn.load(one.export_library(tmp_path / "one.so")).threads == 1


def test_the_thread_pool_has_a_worker_per_physical_core():
    """TVM fixes its pool's workers when the pool starts (half the logical CPUs by default:
    one on a 2-core machine without SMT); importing tvm_qnn sizes it so ``threads=`` up to
    the physical cores really runs on that many. A fresh process: the pool starts there."""
    import subprocess
    import sys

    code = ("import tvm, tvm_qnn\n"
            "from tvm_qnn.runtime.threads import physical_cores, use_threads\n"
            "n = physical_cores()\n"
            "use_threads(n)\n"
            "print(n, tvm.get_global_func('runtime.NumThreads')())\n")
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out[0] == out[1], out


def test_cpu_profile_times_each_call_and_names_the_layers():
    """profile() on x86: every compiled function of a run, timed alone; the layer kernels
    carry their layer's name, the bit-plane packs the layer they feed."""
    from tvm_qnn.runtime.profile import format_table, summarize
    from tvm_qnn.testing.onnx_models import make_cnn_model

    model = make_cnn_model("qcdq", bits=1)  # W1A1: bit-serial everywhere, with packs
    art = tvm_qnn.compile(model, target="x86")
    rows = art.profile(random_input(model), threads=1)
    bitserial = [r["name"] for r in art.layers if r["bitserial"]]
    assert [r["layer"] for r in rows if r["kind"] == "layer"] == bitserial
    packs = [r for r in rows if r["kind"] == "pack"]
    assert packs and all(p["layer"] in bitserial[1:] for p in packs)
    assert any(r["kind"] == "op" for r in rows)  # e.g. the pooling between layers
    assert all(r["ms"] > 0 for r in rows)
    total = summarize(rows)
    assert total["total_ms"] == pytest.approx(total["layers_ms"] + total["pack_ms"]
                                              + total["ops_ms"])
    assert bitserial[0] in format_table(rows)
