"""decoder/app.py (`decode`): output files, hash reporting, --threads, --trace."""

import zipfile

import numpy as np
import pytest

from common.featio import save_features
from decoder import app
from encoder import app as encoder_app
from tests.helpers import assert_clean_error, run_cli


def write_stream(tmp_path, ref, name="in.bin"):
    path = tmp_path / name
    path.write_bytes(ref.stream)
    return path


def run_main(capsys, argv):
    code = app.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_decode_to_npy_and_npz(tmp_path, capsys, streams):
    chw, _, three = streams
    out = tmp_path / "rec.npy"
    code, stdout, stderr = run_main(capsys, ["-i", write_stream(tmp_path, chw), "-o", out])
    assert code == 0 and stderr == ""
    assert "tensor '' 6x5x7 float32" in stdout and "OK]" in stdout and "decoded" in stdout
    assert np.load(out).tobytes() == chw.reconstruction[""].tobytes()

    out = tmp_path / "rec.npz"
    code, stdout, stderr = run_main(capsys, ["-i", write_stream(tmp_path, three), "-o", out])
    assert code == 0 and stderr == ""
    assert stdout.count("OK]") == 3
    with np.load(out) as archive:
        assert archive.files == list(three.reconstruction)
        for name, array in three.reconstruction.items():
            assert archive[name].dtype == array.dtype and archive[name].tobytes() == array.tobytes()


def test_decode_without_output_only_checks(tmp_path, capsys, streams):
    code, stdout, stderr = run_main(capsys, ["-i", write_stream(tmp_path, streams[1])])
    assert code == 0 and stderr == "" and "OK]" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin"]


@pytest.mark.parametrize("output", ["rec.npy", "rec.bin", "missing/rec.npz"])
def test_unusable_output_paths(tmp_path, capsys, streams, output):
    code, stdout, stderr = run_main(capsys, ["-i", write_stream(tmp_path, streams[2]), "-o", tmp_path / output])
    assert_clean_error(code, stdout, stderr, "decode", tmp_path / output)


def test_missing_input(tmp_path, capsys):
    code, stdout, stderr = run_main(capsys, ["-i", tmp_path / "nope.bin", "-o", tmp_path / "out.npy"])
    assert_clean_error(code, stdout, stderr, "decode", tmp_path / "out.npy")


def test_no_hash_check(tmp_path, capsys, streams):
    data = bytearray(streams[0].stream)
    data[-6] ^= 0x80          # a bit of the last MD5 (then alignment bits; END is the last 5 bytes)
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(data))
    code, stdout, stderr = run_main(capsys, ["-i", path, "-o", tmp_path / "a.npy"])
    assert_clean_error(code, stdout, stderr, "decode", tmp_path / "a.npy")
    assert "***ERROR***" in stdout
    code, stdout, stderr = run_main(capsys, ["-i", path, "-o", tmp_path / "b.npy", "--no-hash-check"])
    assert code == 0 and "MD5" not in stdout
    assert np.load(tmp_path / "b.npy").tobytes() == streams[0].reconstruction[""].tobytes()


def test_tensor_names_that_numpy_savez_cannot_take(tmp_path, capsys):
    """'file' is np.savez's own parameter name; '' is a lone .npy tensor's name."""
    from encoder.encoder import encode_features
    from tests.helpers import options
    tensors = {"file": np.ones((2, 2, 2), np.float32), "p2/x": np.zeros((3, 2), np.float16),
               "ünï": np.full((1, 1, 1), 2.0)}
    path = tmp_path / "in.bin"
    path.write_bytes(encode_features(tensors, options()).stream)
    code, stdout, stderr = run_main(capsys, ["-i", path, "-o", tmp_path / "out.npz"])
    assert code == 0, stderr
    with np.load(tmp_path / "out.npz") as archive:
        assert archive.files == list(tensors)
        for name, array in tensors.items():
            np.testing.assert_array_equal(archive[name], array)


def test_npz_output_is_byte_reproducible(tmp_path):
    tensors = {"a": np.arange(6.0).reshape(2, 3), "": np.ones((1, 2, 2), np.float16)}
    save_features(str(tmp_path / "x.npz"), tensors)
    with zipfile.ZipFile(tmp_path / "x.npz") as archive:
        assert [i.filename for i in archive.infolist()] == ["a.npy", "arr_0.npy"]
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_threads_cli_outputs_identical(tmp_path, streams):
    """decode --threads 1 and --threads 2 write byte-identical files."""
    path = write_stream(tmp_path, streams[2])
    outputs = []
    for threads in (1, 2):
        out = tmp_path / f"rec{threads}.npz"
        proc = run_cli("decode", "-i", path, "-o", out, "--threads", threads)
        assert proc.returncode == 0, proc.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    code = app.main(["-i", str(path), "-o", str(tmp_path / "rec-inproc.npz"), "--threads", "2"])
    assert code == 0 and (tmp_path / "rec-inproc.npz").read_bytes() == outputs[0]


def test_encoder_and_decoder_traces_are_equal(tmp_path, capsys):
    """encode --trace equals decode --trace for a multi-tensor stream (with a hash unit)."""
    from tests.helpers import three_tensors
    features = tmp_path / "feat.npz"
    np.savez(features, **three_tensors())
    stream, enc_trace, dec_trace = tmp_path / "s.bin", tmp_path / "enc.trace", tmp_path / "dec.trace"
    assert encoder_app.main(["-i", str(features), "-o", str(stream), "--QP=30", "--trace", str(enc_trace)]) == 0
    assert app.main(["-i", str(stream), "-o", str(tmp_path / "rec.npz"), "--trace", str(dec_trace)]) == 0
    capsys.readouterr()
    enc, dec = enc_trace.read_bytes(), dec_trace.read_bytes()
    assert enc == dec
    text = enc.decode()
    for element in ("sh_magic", "unit_type", "fps_num_tensors_minus1", "ti_name", "tsq_qp", "tdu_tensor_idx",
                    "tdu_entropy_payload", "dfh_md5"):
        assert element in text
    assert text.count("tdu_tensor_idx") == 3 and text.count("dfh_md5") == 3
    assert text.count("unit_type") == 6                 # FPS, 3 TDUs, hash, END


def test_trace_via_cli(tmp_path, streams):
    path = write_stream(tmp_path, streams[0])
    proc = run_cli("decode", "-i", path, "--trace", tmp_path / "t.txt")
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "t.txt").read_text().splitlines()
    assert lines[0].split() == ["sh_magic", "u(32)", ":", str(0x46435253)]


@pytest.mark.parametrize("kind", ["input", "symlink", "folder"])
def test_outputs_that_would_clobber_something_are_refused(tmp_path, capsys, streams, kind):
    stream = write_stream(tmp_path, streams[0], "in.npy")      # an .npy name, so only the clobber check stops it
    output = stream if kind == "input" else tmp_path / "rec.npy"
    if kind == "symlink":
        (tmp_path / "target.npy").write_bytes(b"target")
        output.symlink_to(tmp_path / "target.npy")
    elif kind == "folder":
        output.mkdir()
    code, stdout, stderr = run_main(capsys, ["-i", stream, "-o", output])
    assert_clean_error(code, stdout, stderr, "decode")
    assert stream.read_bytes() == streams[0].stream
    if kind == "symlink":
        assert output.is_symlink() and (tmp_path / "target.npy").read_bytes() == b"target"


def test_a_stream_beyond_the_memory_budget_is_refused_before_decoding(tmp_path, capsys, streams):
    from common.errors import BitstreamError
    from decoder.decoder import decode_stream, decoding_memory
    decoded = decode_stream(streams[2].stream)
    needed = decoding_memory(decoded.specs)
    with pytest.raises(BitstreamError, match=r"memory budget of 0 MiB \(decode --max-memory MIB raises it\)"):
        decode_stream(streams[2].stream, max_memory=needed - 1)
    big = tmp_path / "big.bin"
    big.write_bytes(streams[2].stream)
    code, stdout, stderr = run_main(capsys, ["-i", big, "-o", tmp_path / "rec.npz", "--max-memory", "0"])
    assert_clean_error(code, stdout, stderr, "decode", tmp_path / "rec.npz")
    assert "--max-memory" in stderr
