"""common/featio.py: reading and atomically writing .npy/.npz feature files."""

import os

import numpy as np
import pytest

from common.errors import InputError
from common.featio import SINGLE_TENSOR_NAME, load_features, save_features, write_atomically


def test_npy_round_trip(tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float16)
    path = str(tmp_path / "x.npy")
    save_features(path, {"": x})
    loaded = load_features(path)
    assert list(loaded) == [SINGLE_TENSOR_NAME]
    assert loaded[""].dtype == x.dtype and loaded[""].tobytes() == x.tobytes()


@pytest.mark.parametrize("names", [["p2", "p3", "p4"], ["file"], ["file", "arr_0x", "ünïcode", "a/b"], [""]])
def test_npz_round_trip_any_name(tmp_path, names):
    tensors = {name: np.full((2, i + 1), i, dtype=np.float32) for i, name in enumerate(names)}
    path = str(tmp_path / "x.npz")
    save_features(path, tensors)
    loaded = load_features(path)
    assert list(loaded) == [name or "arr_0" for name in names]
    for (name, array), loaded_array in zip(tensors.items(), loaded.values()):
        np.testing.assert_array_equal(loaded_array, array)
    with np.load(path) as archive:                    # numpy reads what we write
        assert len(archive.files) == len(names)


def test_npz_names_that_collide_are_refused(tmp_path):
    path = tmp_path / "x.npz"
    with pytest.raises(InputError, match="same name"):
        save_features(str(path), {"": np.zeros((1, 1)), "arr_0": np.ones((1, 1))})
    assert not path.exists()


def test_output_checks(tmp_path):
    with pytest.raises(InputError, match=r"\.npz"):
        save_features(str(tmp_path / "x.npy"), {"a": np.zeros((1, 1)), "b": np.zeros((1, 1))})
    with pytest.raises(InputError, match="must be a .npy or .npz"):
        save_features(str(tmp_path / "x.txt"), {"a": np.zeros((1, 1))})
    with pytest.raises(InputError, match="folder does not exist"):
        save_features(str(tmp_path / "no" / "x.npy"), {"a": np.zeros((1, 1))})
    assert sorted(os.listdir(tmp_path)) == []


def test_input_checks(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_features(str(tmp_path / "x.npy"))
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="must be a .npy or .npz"):
        load_features(str(tmp_path / "x.txt"))
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match="cannot read"):
        load_features(str(tmp_path / "bad.npy"))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(InputError, match="cannot read"):
        load_features(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(InputError, match="no arrays"):
        load_features(str(tmp_path / "empty.npz"))
    with pytest.raises(InputError):
        load_features(str(tmp_path))                   # a folder


def test_write_atomically_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def failing(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(str(target), failing)
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]
    write_atomically(str(target), lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_a_full_disk_is_one_error_and_no_partial_file(tmp_path):
    def write_until_full(f):
        f.write(b"x" * 1000)
        raise OSError(28, "No space left on device")
    path = tmp_path / "out.bin"
    with pytest.raises(InputError, match="No space left"):
        write_atomically(str(path), write_until_full)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", ["/proc/fcrs-out.bin", "/sys/fcrs-out.bin", "/dev/full"])
def test_outputs_the_kernel_refuses_are_one_error(path):
    if not os.path.isdir(os.path.dirname(path)):
        pytest.skip(f"no {os.path.dirname(path)} here")
    with pytest.raises(InputError):
        write_atomically(path, lambda f: f.write(b"x"))
    assert not os.path.exists(path) or path == "/dev/full"
