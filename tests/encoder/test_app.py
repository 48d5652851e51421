"""encoder/app.py (`encode`): bad input and bad configuration give one clear error line,
a non-zero exit and no output; cfg precedence and --help."""

import os

import numpy as np
import pytest

from common.tools.tokenwise.syntax import QP_MAX
from decoder.decoder import decode_stream
from encoder import app
from encoder.options import OPTIONS
from tests.helpers import UNIFORM_CFG, assert_clean_error, run_cli


@pytest.fixture
def features(tmp_path):
    path = tmp_path / "feat.npy"
    np.save(path, np.random.default_rng(0).standard_normal((4, 5, 6)).astype(np.float32))
    return path


def run_main(capsys, argv):
    code = app.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def encode_ok(capsys, argv, output):
    code, out, err = run_main(capsys, argv)
    assert code == 0, err
    assert err == ""
    return decode_stream(output.read_bytes())


# -- bad input ---------------------------------------------------------------------------------------

def _npy(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return path


BAD_ARRAYS = {
    "nan": np.array([[0.0, np.nan]], dtype=np.float32),
    "inf": np.full((2, 2, 2), -np.inf),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "5-d": np.zeros((1, 1, 2, 2, 2), dtype=np.float32),
    "1-d": np.zeros(5, dtype=np.float32),
    "int": np.arange(12, dtype=np.int64).reshape(3, 4),
    "float128": np.zeros((2, 2), dtype=np.longdouble),
}


@pytest.mark.parametrize("kind", BAD_ARRAYS)
def test_bad_arrays(tmp_path, capsys, kind):
    out_path = tmp_path / "out.bin"
    code, out, err = run_main(capsys, ["-c", UNIFORM_CFG, "-i", _npy(tmp_path, "x.npy", BAD_ARRAYS[kind]),
                                       "-o", out_path])
    assert_clean_error(code, out, err, "encode", out_path)


def test_bad_tensor_inside_an_npz(tmp_path, capsys):
    path = tmp_path / "x.npz"
    np.savez(path, good=np.ones((2, 3, 3), dtype=np.float32), bad=np.array([[np.nan]], dtype=np.float32))
    out_path = tmp_path / "out.bin"
    code, out, err = run_main(capsys, ["-i", path, "-o", out_path])
    assert_clean_error(code, out, err, "encode", out_path)
    assert "tensor 'bad'" in err


def _cfg(tmp_path, text, name="x.cfg"):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_RUNS = {
    "missing input": lambda t, f: ["-i", t / "nope.npy"],
    "txt input": lambda t, f: ["-i", _cfg(t, "1 2 3\n", "feat.txt")],
    "corrupt npy": lambda t, f: ["-i", _cfg(t, "not numpy", "bad.npy")],
    "corrupt npz": lambda t, f: ["-i", _cfg(t, "not a zip", "bad.npz")],
    "empty npz": lambda t, f: ["-i", _empty_npz(t)],
    "pickled npy": lambda t, f: ["-i", _pickled(t)],
    "unknown key in cfg": lambda t, f: ["-c", _cfg(t, "QP : 40\nFoo : 1\n"), "-i", f],
    "unknown key on command line": lambda t, f: ["-c", UNIFORM_CFG, "-i", f, "--Foo=1"],
    "malformed cfg line": lambda t, f: ["-c", _cfg(t, "QP 40\n"), "-i", f],
    "bad value type in cfg": lambda t, f: ["-c", _cfg(t, "QP : forty\n"), "-i", f],
    "bad value type on command line": lambda t, f: ["-i", f, "--DecodedFeatureHash=perhaps"],
    "out-of-range QP": lambda t, f: ["-i", f, f"--QP={QP_MAX + 1}"],
    "out-of-range QP in cfg": lambda t, f: ["-c", _cfg(t, "QP : -1000\n"), "-i", f],
    "missing cfg file": lambda t, f: ["-c", t / "missing.cfg", "-i", f],
    "cfg is a folder": lambda t, f: ["-c", t, "-i", f],
    "level above the limit": lambda t, f: ["-i", _npy(t, "big.npy", np.array([[1e12]])), "--QP=0"],
    "stray argument": lambda t, f: ["-i", f, "QP=3"],
    "single-dash option": lambda t, f: ["-i", f, "-QP=3"],
    "option without value": lambda t, f: ["-i", f, "-c"],
}


def _empty_npz(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path)
    return path


def _pickled(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return path


@pytest.mark.parametrize("case", BAD_RUNS)
def test_bad_runs(tmp_path, capsys, features, case):
    out_path = tmp_path / "out.bin"
    code, out, err = run_main(capsys, ["-o", out_path] + BAD_RUNS[case](tmp_path, features))
    assert_clean_error(code, out, err, "encode", out_path)


@pytest.mark.parametrize("argv", [["-i", "x.npy"], ["-o", "x.bin"], ["-c", "cfg"]])
def test_missing_required_paths(capsys, argv):
    code, out, err = run_main(capsys, argv)
    assert_clean_error(code, out, err, "encode")


def test_missing_output_folder(tmp_path, capsys, features):
    out_path = tmp_path / "no" / "such" / "out.bin"
    code, out, err = run_main(capsys, ["-i", features, "-o", out_path])
    assert_clean_error(code, out, err, "encode", out_path)


def test_failed_run_leaves_an_existing_output_alone(tmp_path, capsys):
    out_path = tmp_path / "out.bin"
    out_path.write_bytes(b"previous")
    code, out, err = run_main(capsys, ["-i", _npy(tmp_path, "x.npy", BAD_ARRAYS["nan"]), "-o", out_path])
    assert code != 0 and out_path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "x.npy"]


@pytest.mark.parametrize("case", ["nan", "unknown key"])
def test_bad_runs_in_a_subprocess(tmp_path, features, case):
    out_path = tmp_path / "out.bin"
    if case == "nan":
        argv = ["-c", UNIFORM_CFG, "-i", _npy(tmp_path, "x.npy", BAD_ARRAYS["nan"]), "-o", out_path]
    else:
        argv = ["-c", _cfg(tmp_path, "Colour : blue\n"), "-i", features, "-o", out_path]
    proc = run_cli("encode", *argv)
    assert_clean_error(proc.returncode, proc.stdout, proc.stderr, "encode", out_path)


# -- cfg precedence through the app -------------------------------------------------------------------

def test_cfg_precedence(tmp_path, capsys, features):
    a = _cfg(tmp_path, "QP : 20   # first\n\n# RoundingOffset : 0.1\nDecodedFeatureHash : 0\n", "a.cfg")
    b = _cfg(tmp_path, "QP : 28\n", "b.cfg")
    out_path = tmp_path / "out.bin"
    decoded = encode_ok(capsys, ["-c", a, "-c", b, "-i", features, "-o", out_path], out_path)
    assert decoded.specs[0].qp == 28 and decoded.hash_checks == []
    decoded = encode_ok(capsys, ["-c", b, "-c", a, "-i", features, "-o", out_path], out_path)
    assert decoded.specs[0].qp == 20
    decoded = encode_ok(capsys, ["--QP=33", "-c", a, "-c", b, "-i", features, "-o", out_path,
                                 "--DecodedFeatureHash=1"], out_path)
    assert decoded.specs[0].qp == 33 and len(decoded.hash_checks) == 1
    decoded = encode_ok(capsys, ["-i", features, "-o", out_path], out_path)      # no cfg: defaults
    assert decoded.specs[0].qp == dict((o.name, o.default) for o in OPTIONS)["QP"]


def test_success_output(tmp_path, capsys, features):
    out_path = tmp_path / "out.bin"
    code, out, err = run_main(capsys, ["-c", UNIFORM_CFG, "--input", features, "--output", out_path])
    assert code == 0 and err == ""
    assert "bits/feature point" in out and f"{8 * out_path.stat().st_size} bits written" in out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".fcrs-")] == []


# -- help ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_help_lists_every_option(capsys, argv):
    code, out, err = run_main(capsys, argv)
    assert code == 0 and err == ""
    for option in OPTIONS:
        assert f"--{option.name}=" in out
    assert "-c, --config" in out


def test_help_in_a_subprocess():
    proc = run_cli("encode", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in OPTIONS:
        assert f"--{option.name}=" in proc.stdout


# -- outputs that would clobber something ------------------------------------------------------------

def test_output_equal_to_the_input_is_refused(tmp_path, capsys, features):
    before = features.read_bytes()
    code, out, err = run_main(capsys, ["-c", UNIFORM_CFG, "-i", features, "-o", features])
    assert_clean_error(code, out, err, "encode")
    assert "is the input file" in err and features.read_bytes() == before


def test_output_through_another_name_of_the_input_is_refused(tmp_path, capsys, features):
    alias = tmp_path / "alias.npy"
    os.link(features, alias)
    code, out, err = run_main(capsys, ["-c", UNIFORM_CFG, "-i", features, "-o", alias])
    assert_clean_error(code, out, err, "encode")


@pytest.mark.parametrize("kind", ["symlink", "folder", "fifo"])
def test_existing_non_regular_outputs_are_left_alone(tmp_path, capsys, features, kind):
    out_path = tmp_path / "out.bin"
    if kind == "symlink":
        (tmp_path / "target.bin").write_bytes(b"target")
        out_path.symlink_to(tmp_path / "target.bin")
    elif kind == "folder":
        out_path.mkdir()
    else:
        os.mkfifo(out_path)
    code, out, err = run_main(capsys, ["-c", UNIFORM_CFG, "-i", features, "-o", out_path])
    assert_clean_error(code, out, err, "encode")
    assert out_path.is_symlink() if kind == "symlink" else (out_path.is_dir() or out_path.is_fifo())
    if kind == "symlink":
        assert (tmp_path / "target.bin").read_bytes() == b"target"


def test_unwritable_output_folder_is_one_error_line(tmp_path, capsys, features):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    code, out, err = run_main(capsys, ["-c", UNIFORM_CFG, "-i", features, "-o", folder / "out.bin"])
    assert_clean_error(code, out, err, "encode")


def test_npz_member_that_is_not_an_array_is_one_error_line(tmp_path, capsys):
    import io
    import zipfile
    path = tmp_path / "odd.npz"
    array = io.BytesIO()
    np.save(array, np.ones((4, 5, 6), dtype=np.float32))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("p3.npy", array.getvalue())
        archive.writestr("notes.txt", b"hello")
    code, out, err = run_main(capsys, ["-c", UNIFORM_CFG, "-i", path, "-o", tmp_path / "out.bin"])
    assert_clean_error(code, out, err, "encode", tmp_path / "out.bin")


def test_outputs_honour_the_umask_and_leave_no_temporary_file(tmp_path, capsys, features):
    old = os.umask(0o027)
    try:
        code, _, err = run_main(capsys, ["-c", UNIFORM_CFG, "-i", features, "-o", tmp_path / "out.bin"])
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fcrs-")]


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path, capsys, features):
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".fcrs-{dead.pid}-abcdef012345.tmp"
    stale.write_bytes(b"left by a killed encoder")
    alive = tmp_path / f".fcrs-{os.getpid()}-abcdef012345.tmp"
    alive.write_bytes(b"another writer's file in progress")
    code, _, err = run_main(capsys, ["-c", UNIFORM_CFG, "-i", features, "-o", tmp_path / "out.bin"])
    assert code == 0, err
    assert not stale.exists() and alive.exists()


@pytest.mark.parametrize("output", ["/proc/fcrs-out.bin", "/sys/fcrs-out.bin", "/dev/full"])
def test_outputs_the_kernel_refuses_are_one_error_line(capsys, features, output):
    if not os.path.isdir(os.path.dirname(output)):
        pytest.skip(f"no {os.path.dirname(output)} here")
    code, out, err = run_main(capsys, ["-c", UNIFORM_CFG, "-i", features, "-o", output])
    assert_clean_error(code, out, err, "encode")
