"""Malformed streams: hundreds of mutated, truncated and crafted streams, generated
deterministically from three small valid ones, each run through the decode app.

Every case must end in one of:
  * a clean error: non-zero exit, exactly one 'decode: error:' line on stderr, no
    traceback, no output file (an MD5 mismatch also prints ***ERROR*** lines on stdout);
  * a successful decode whose tensors have the reference MD5s (a flip in bits the
    decoder never reads, a reserved unit that is skipped, a changed minor version ...).
No case may crash, take more than a second or allocate more than 64 MiB.
"""

import copy
import hashlib
import time
import tracemalloc

import numpy as np
import pytest

from common.codepoints import DType, Layout, UnitType
from common.hashing import tensor_md5
from common.stream import STREAM_HEADER_BYTES
from common.syntax import SyntaxReader, SyntaxStructure, SyntaxWriter
from common.limits import MAX_DECODED_ELEMENTS, MAX_DIM
from common.syntax_structures import decoded_feature_hash, feature_parameter_set, tensor_data_unit
from common.tools.tokenwise.sq import TokenwiseEntropyCoder
from decoder import app
from tests.helpers import assert_clean_error, join_units, reference_streams, run_cli, split_units

ERROR, OK, EITHER, MISMATCH = "error", "ok", "error-or-ok", "md5-mismatch"
NO_HASH_WARNING = "decode: warning: no integrity check in this stream\n"
MAX_SECONDS = 1.0
MAX_TRACED_BYTES = 64 << 20


class CraftingWriter(SyntaxWriter):
    """A SyntaxWriter that skips `require` constraints (value ranges are still checked),
    to write parameter sets that break a conformance constraint."""

    def require(self, condition, message):
        pass


def parse_fps(payload):
    fps = SyntaxStructure()
    feature_parameter_set(SyntaxReader(payload), fps)
    return fps


def write_fps(fps, writer=SyntaxWriter):
    rw = writer()
    feature_parameter_set(rw, fps)
    return rw.getvalue()


def write_unchecked(function, structure):
    from tests.common.test_syntax_structures import UncheckedWriter
    rw = UncheckedWriter()
    function(rw, structure)
    rw.byte_alignment()
    return rw.getvalue()


def flip(data, bit):
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


class Cases:
    def __init__(self):
        self.items = []

    def add(self, case_id, data, kind, match=None, reference=None):
        self.items.append(pytest.param(bytes(data), kind, match, reference, id=case_id))


def build_cases():
    cases = Cases()
    refs = reference_streams()
    for ref in refs:
        add_stream_cases(cases, ref)
    add_crafted_cases(cases, refs)
    return cases.items


def add_stream_cases(cases, ref):
    s, name = ref.stream, ref.name
    units = split_units(s)
    header = s[:STREAM_HEADER_BYTES]
    pairs = [(u.unit_type, u.payload) for u in units]
    fps_unit = units[0]
    tdus = [u for u in units if u.unit_type == UnitType.TENSOR_DATA]
    hash_unit = next(u for u in units if u.unit_type == UnitType.DECODED_FEATURE_HASH)

    def add(case_id, data, kind, match=None):
        cases.add(f"{name}-{case_id}", data, kind, match, ref)

    add("valid", s, OK)

    # -- single bit flips -----------------------------------------------------------------------
    first = name == "chw"                      # the first stream gets the denser sampling
    bits = {}                                  # bit position -> region
    bits.update((b, "header") for b in range(0, 8 * STREAM_HEADER_BYTES, 1 if first else 4))
    for u in units:
        bits.update((b, "unit") for b in range(8 * u.start, 8 * u.payload_start, 3 if first else 5))
    bits.update((b, "fps") for b in range(8 * fps_unit.payload_start, 8 * fps_unit.end, 1 if first else 3))
    for u in tdus:                                                           # entropy payloads
        body = range(8 * u.payload_start, 8 * u.end)
        bits.update((b, "payload") for b in body[::max(1, len(body) // 8)])
        bits.update((b, "payload-tail") for b in body[-24::2])              # the last words
    hash_start = 8 * hash_unit.payload_start
    bits.update((b, "hash") for b in range(hash_start, hash_start + 12))     # type, count
    bits.update((b, "hash") for b in range(hash_start + 12, 8 * hash_unit.end, 61))   # MD5 bytes
    for bit, region in sorted(bits.items()):
        add(f"flip-{region}-{bit}", flip(s, bit), EITHER)

    # -- truncations ----------------------------------------------------------------------------
    cuts = {0, 1, 3, 4, 5, STREAM_HEADER_BYTES - 1}
    for u in units:
        cuts |= {u.start, u.start + 1, u.start + 4, u.payload_start, u.end - 1,
                 u.payload_start + len(u.payload) // 2}
    for cut in sorted(c for c in cuts if 0 <= c < len(s)):
        add(f"cut{cut}", s[:cut], ERROR, "truncated|bad magic")

    # -- appended garbage -----------------------------------------------------------------------
    add("garbage1", s + b"\x00", ERROR, "after the end_of_stream")
    add("garbage7", s + b"garbage", ERROR, "after the end_of_stream")
    add("garbage-unit", s + bytes([2, 0, 0, 0, 1, 0]), ERROR, "after the end_of_stream")
    add("twice", s + s, ERROR, "after the end_of_stream")

    # -- magic and version ----------------------------------------------------------------------
    add("magic-zero", bytes(4) + s[4:], ERROR, "bad magic")
    add("magic-fcrt", b"FCRT" + s[4:], ERROR, "bad magic")
    add("magic-lower", b"fcrs" + s[4:], ERROR, "bad magic")
    add("empty-file", b"", ERROR, "bad magic")
    add("magic-only", b"FCRS", ERROR, "bad magic")
    for major in (0, 1, 2, 4, 255):       # 1, 2: older streams (lm_extra_stages ue(v); no tsq_channel_offsets_flag)
        add(f"major{major}", s[:4] + bytes([major]) + s[5:], ERROR, "version")
    add("minor-200", s[:5] + bytes([200]) + s[6:], MISMATCH)    # the hash covers the stream header too

    # -- unit framing ---------------------------------------------------------------------------
    def rebuild(new_pairs):
        return join_units(header, new_pairs)

    # a reserved unit type anywhere is skipped; before the hash unit its bytes are covered by the
    # hash (a unit inserted there after encoding is a mismatch), after it they are not
    hash_position = [t for t, _ in pairs].index(UnitType.DECODED_FEATURE_HASH)
    for position in range(len(pairs)):
        for unit_type in ((0, 5) if position in (0, len(pairs) - 1) else (255,)):
            skipped = pairs[:position] + [(unit_type, b"reserved payload")] + pairs[position:]
            add(f"reserved{unit_type}-at{position}", rebuild(skipped), MISMATCH if position <= hash_position else OK)
    add("reserved-empty-units", rebuild([(9, b"")] + pairs[:-1] + [(200, bytes(300)), (6, b"")] + pairs[-1:]),
        MISMATCH)
    add("reserved-after-hash", rebuild(pairs[:-1] + [(200, bytes(30)), (6, b"")] + pairs[-1:]), OK)
    add("no-end", rebuild(pairs[:-1]), ERROR, "no end_of_stream")
    add("end-only", rebuild([(UnitType.END_OF_STREAM, b"")]), ERROR, "feature_parameter_set")
    add("end-first", rebuild(pairs[-1:] + pairs), ERROR)
    add("end-with-payload", rebuild(pairs[:-1] + [(UnitType.END_OF_STREAM, b"x")]), EITHER)   # spec: "(empty)"
    add("no-fps", rebuild(pairs[1:]), ERROR, "feature_parameter_set")
    add("fps-twice", rebuild(pairs[:1] + pairs), ERROR, "second feature_parameter_set")
    add("fps-after-data", rebuild(pairs[1:2] + pairs[:1] + pairs[2:]), ERROR, "feature_parameter_set")
    add("fps-at-end", rebuild(pairs[1:-1] + pairs[:1] + pairs[-1:]), ERROR, "feature_parameter_set")
    add("no-tensor-data", rebuild([p for p in pairs if p[0] != UnitType.TENSOR_DATA]), ERROR, "data for 0")
    add("first-tdu-twice", rebuild(pairs[:2] + pairs[1:]), ERROR, "tensor data unit for tensor 0")
    add("last-tdu-missing", rebuild([p for p in pairs if p[1] != tdus[-1].payload]), ERROR, "tensor")
    add("no-hash", rebuild([p for p in pairs if p[0] != UnitType.DECODED_FEATURE_HASH]), OK)
    add("hash-twice", rebuild(pairs[:-1] + [pairs[-2], pairs[-1]]), EITHER)
    add("hash-first", rebuild(pairs[:1] + [pairs[-2]] + pairs[1:-2] + pairs[-1:]), EITHER)
    add("fps-as-data", rebuild([(UnitType.TENSOR_DATA, pairs[0][1])] + pairs[1:]), ERROR)
    # unit sizes that disagree with the stream
    size_at = fps_unit.start + 1
    for delta in (1, -1, 1 << 20):
        size = len(fps_unit.payload) + delta
        add(f"fps-size{delta:+d}", s[:size_at] + size.to_bytes(4, "big") + s[size_at + 4:], ERROR)
    add("size-max", s[:size_at] + b"\xff\xff\xff\xff" + s[size_at + 4:], ERROR, "truncated")
    last = tdus[-1]
    add("tdu-size-minus4", s[:last.start + 1] + (len(last.payload) - 4).to_bytes(4, "big") + s[last.start + 5:],
        ERROR)
    if len(tdus) > 1:
        swapped = list(pairs)
        i, j = pairs.index((2, tdus[0].payload)), pairs.index((2, tdus[1].payload))
        swapped[i], swapped[j] = swapped[j], swapped[i]
        add("tdus-swapped", rebuild(swapped), ERROR, "tensor data unit for tensor 1")

    # -- tensor data units ----------------------------------------------------------------------
    def with_tdu(index, payload):
        new = [(t, p) for t, p in pairs]
        k = [i for i, (t, _) in enumerate(pairs) if t == UnitType.TENSOR_DATA][index]
        new[k] = (UnitType.TENSOR_DATA, payload)
        return rebuild(new)

    first = tdus[0].payload
    add("tdu-empty", with_tdu(0, b""), ERROR, "truncated tensor data unit")
    add("tdu-no-payload", with_tdu(0, first[:1]), EITHER)
    add("tdu-odd-length", with_tdu(0, first[:-1]), ERROR, "multiple of 4")
    add("tdu-extra-words", with_tdu(0, first + bytes(8)), ERROR, "entropy payload")
    add("tdu-extra-ff", with_tdu(0, first + b"\xff" * 12), ERROR, "entropy payload")
    add("tdu-payload-zeroed", with_tdu(0, first[:1] + bytes(len(first) - 1)), EITHER)
    add("tdu-payload-ff", with_tdu(0, first[:1] + b"\xff" * (len(first) - 1)), EITHER)
    add("tdu-idx-255", with_tdu(0, write_tdu(255, first[1:])), ERROR, "tensor 255")
    add("tdu-idx-256", with_tdu(0, write_unchecked(tensor_data_unit, SyntaxStructure(
        tdu_tensor_idx=256, tdu_entropy_payload=first[1:]))), ERROR, "tdu_tensor_idx")
    add("tdu-alignment-bit", with_tdu(0, bytes([first[0] | 1]) + first[1:]), ERROR, "byte_alignment")
    add("tdu-ue-too-long", with_tdu(0, bytes(5) + b"\x80" + bytes(4)), ERROR, "leading zeros|tdu_tensor_idx")
    for cut in (4, 8):
        add(f"tdu-payload-minus{cut}", with_tdu(0, first[:-cut]), EITHER)

    # -- hash unit ------------------------------------------------------------------------------
    def with_hash(payload):
        return rebuild([(t, payload if t == UnitType.DECODED_FEATURE_HASH else p) for t, p in pairs])

    dfh = SyntaxStructure()
    decoded_feature_hash(SyntaxReader(hash_unit.payload), dfh)
    wrong = copy.deepcopy(dfh)
    wrong.dfh_tensors[-1].dfh_md5 = hashlib.md5(b"not it").digest()
    add("md5-wrong", with_hash(write_structure(decoded_feature_hash, wrong)), MISMATCH)
    swapped = copy.deepcopy(dfh)
    swapped.dfh_tensors.reverse()
    if len(swapped.dfh_tensors) > 1:
        add("md5-swapped", with_hash(write_structure(decoded_feature_hash, swapped)), MISMATCH)
    fewer = copy.deepcopy(dfh)
    fewer.dfh_num_tensors_minus1 += 1
    fewer.dfh_tensors.append(SyntaxStructure(dfh_md5=bytes(16)))
    add("hash-count-more", with_hash(write_structure(decoded_feature_hash, fewer)), ERROR, "one hash per tensor")
    if dfh.dfh_num_tensors_minus1 > 0:
        less = copy.deepcopy(dfh)
        less.dfh_num_tensors_minus1 -= 1
        less.dfh_tensors.pop()
        add("hash-count-less", with_hash(write_structure(decoded_feature_hash, less)), ERROR, "one hash per tensor")
    add("hash-type-1", with_hash(bytes([1]) + hash_unit.payload[1:]), ERROR, "dfh_hash_type_idc")
    add("hash-truncated", with_hash(hash_unit.payload[:-1]), ERROR, "truncated")
    add("hash-empty", with_hash(b""), ERROR, "truncated")
    add("hash-extra-bytes", with_hash(hash_unit.payload + b"\0"), EITHER)

    # -- parameter set --------------------------------------------------------------------------
    fps = parse_fps(fps_unit.payload)

    def with_fps(new_fps, writer=SyntaxWriter):
        return rebuild([(pairs[0][0], write_fps(new_fps, writer))] + pairs[1:])

    def variant(edit):
        new = copy.deepcopy(fps)
        edit(new)
        return new

    ext = variant(lambda f: setattr(f, "fps_extension_flag", 1))
    ext.fps_extension_data = b"future syntax"
    add("fps-extension", with_fps(ext), MISMATCH)          # the hash covers the parameter set's bytes
    add("fps-trailing-bytes", rebuild([(pairs[0][0], pairs[0][1] + b"\0\0")] + pairs[1:]), EITHER)
    add("fps-truncated", rebuild([(pairs[0][0], pairs[0][1][:-1])] + pairs[1:]), ERROR)
    add("fps-empty", rebuild([(pairs[0][0], b"")] + pairs[1:]), ERROR, "truncated")
    add("fps-all-ones", rebuild([(pairs[0][0], b"\xff" * len(pairs[0][1]))] + pairs[1:]), ERROR)
    add("fps-all-zeros", rebuild([(pairs[0][0], bytes(len(pairs[0][1])))] + pairs[1:]), ERROR)

    def set_info(field, value, index=0):
        return variant(lambda f: setattr(f.fps_tensors[index], field, value))

    add("dtype-changed", with_fps(set_info("ti_dtype_idc", DType.FLOAT64 if fps.fps_tensors[0].ti_dtype_idc
                                           != DType.FLOAT64 else DType.FLOAT32)), MISMATCH)
    add("qp-changed", with_fps(variant(lambda f: setattr(f.fps_tensors[0].ti_tokenwise_sq_params, "tsq_qp",
                                                          f.fps_tensors[0].ti_tokenwise_sq_params.tsq_qp + 8))),
        MISMATCH)
    add("qp-max", with_fps(variant(lambda f: setattr(f.fps_tensors[0].ti_tokenwise_sq_params, "tsq_qp", 511))),
        EITHER)
    add("step-map-flag-toggled", with_fps(variant(lambda f: setattr(
        f.fps_tensors[0].ti_tokenwise_sq_params, "tsq_step_map_flag",
        1 - f.fps_tensors[0].ti_tokenwise_sq_params.tsq_step_map_flag))), EITHER)
    add("channel-offsets-flag-toggled", with_fps(variant(lambda f: setattr(
        f.fps_tensors[0].ti_tokenwise_sq_params, "tsq_channel_offsets_flag",
        1 - f.fps_tensors[0].ti_tokenwise_sq_params.tsq_channel_offsets_flag))), EITHER)
    add("channels-plus1", with_fps(set_info("ti_num_channels_minus1", fps.fps_tensors[0].ti_num_channels_minus1 + 1)),
        EITHER)
    add("channels-doubled", with_fps(set_info("ti_num_channels_minus1",
                                              2 * fps.fps_tensors[0].ti_num_channels_minus1 + 1)), EITHER)
    add("bad-utf8-name", with_fps(variant(lambda f: (setattr(f.fps_tensors[0], "ti_name", b"\xff\xfe"),
                                                      setattr(f.fps_tensors[0], "ti_name_length", 2)))),
        ERROR, "UTF-8")
    if len(fps.fps_tensors) > 1:
        add("duplicate-names", with_fps(variant(lambda f: (
            setattr(f.fps_tensors[1], "ti_name", f.fps_tensors[0].ti_name),
            setattr(f.fps_tensors[1], "ti_name_length", f.fps_tensors[0].ti_name_length)))), ERROR, "share a name")
        add("one-tensor-less", with_fps(variant(lambda f: (f.fps_tensors.pop(), setattr(
            f, "fps_num_tensors_minus1", f.fps_num_tensors_minus1 - 1)))), ERROR)
    add("one-tensor-more", with_fps(variant(lambda f: (f.fps_tensors.append(copy.deepcopy(f.fps_tensors[0])),
                                                        setattr(f.fps_tensors[-1], "ti_name", b"extra"),
                                                        setattr(f.fps_tensors[-1], "ti_name_length", 5),
                                                        setattr(f, "fps_num_tensors_minus1",
                                                                f.fps_num_tensors_minus1 + 1)))), ERROR, "data for")
    for field, value, match in (("ti_layout_idc", 2, "ti_layout_idc"), ("ti_layout_idc", 15, "ti_layout_idc"),
                                ("ti_dtype_idc", 3, "ti_dtype_idc"), ("ti_tool_idc", 0, "ti_tool_idc"),
                                ("ti_tool_idc", 4, "ti_tool_idc"), ("ti_num_channels_minus1", MAX_DIM, "ti_num")):
        bad = set_info(field, value)
        bad.fps_tensors[0].ti_num_tokens_minus1 = 0         # every branch has its elements
        bad.fps_tensors[0].ti_height_minus1 = bad.fps_tensors[0].ti_width_minus1 = 0
        add(f"{field}-{value}", rebuild([(1, write_unchecked(feature_parameter_set, bad))] + pairs[1:]), ERROR, match)
    bad = variant(lambda f: setattr(f.fps_tensors[0].ti_tokenwise_sq_params, "tsq_qp", 600))
    add("qp-600", rebuild([(1, write_unchecked(feature_parameter_set, bad))] + pairs[1:]), ERROR, "tsq_qp")
    add("tensors-257", rebuild([(1, write_unchecked(feature_parameter_set, variant(lambda f: (
        f.fps_tensors.extend(copy.deepcopy(f.fps_tensors[0]) for _ in range(257 - len(f.fps_tensors))),
        setattr(f, "fps_num_tensors_minus1", 256)))))] + pairs[1:]), ERROR, "fps_num_tensors_minus1")


def write_tdu(index, payload):
    rw = SyntaxWriter()
    tensor_data_unit(rw, SyntaxStructure(tdu_tensor_idx=index, tdu_entropy_payload=payload))
    return rw.getvalue()


def write_structure(function, structure):
    rw = SyntaxWriter()
    function(rw, structure)
    return rw.getvalue()


def huge_info(name, channels, height, width, layout=Layout.CHW):
    s = SyntaxStructure(ti_name_length=len(name), ti_name=name, ti_layout_idc=layout, ti_dtype_idc=DType.FLOAT32,
                        ti_batch_dim_flag=0, ti_num_channels_minus1=channels - 1)
    if layout == Layout.CHW:
        s.ti_height_minus1, s.ti_width_minus1 = height - 1, width - 1
    else:
        s.ti_num_tokens_minus1 = height * width - 1
    s.ti_tool_idc = 1
    s.ti_tokenwise_sq_params = SyntaxStructure(tsq_qp=40, tsq_step_map_flag=0, tsq_channel_offsets_flag=0)
    return s


def add_crafted_cases(cases, refs):
    """Parameter sets that declare too many elements, and payloads that break the step range."""
    ref = refs[0]
    header = ref.stream[:STREAM_HEADER_BYTES]
    pairs = [(u.unit_type, u.payload) for u in split_units(ref.stream)]
    tdu = pairs[1][1]

    def stream_with_fps(infos, payloads=None):
        fps = SyntaxStructure(fps_num_tensors_minus1=len(infos) - 1, fps_tensors=infos, fps_extension_flag=0)
        payloads = payloads if payloads is not None else [tdu] * len(infos)
        units = [(1, write_fps(fps, CraftingWriter))]
        units += [(2, write_tdu(i, p[1:] if p is tdu else p)) for i, p in enumerate(payloads)]
        return join_units(header, units + [(4, b"")])

    near = MAX_DIM - 1
    for dims in ((near, near, near), (near, near, 1), (near, 1, near), (1 << 11, 1 << 11, 1 << 10),
                 (1 << 7, 1 << 10, (1 << 10) + 1)):
        n = dims[0] * dims[1] * dims[2]
        assert n > MAX_DECODED_ELEMENTS
        cases.add(f"crafted-huge-chw-{'x'.join(map(str, dims))}", stream_with_fps([huge_info(b"", *dims)]),
                  ERROR, "MAX_DECODED_ELEMENTS", ref)
    cases.add("crafted-huge-tokens", stream_with_fps([huge_info(b"t", near, near, 1, Layout.TOKENS)]),
              ERROR, "MAX_DECODED_ELEMENTS", ref)
    # each tensor is allowed, together they are not
    parts = [huge_info(bytes([65 + i]), 1 << 7, 1 << 10, 1 << 9) for i in range(3)]
    cases.add("crafted-huge-sum", stream_with_fps(parts), ERROR, "MAX_DECODED_ELEMENTS", ref)
    many = [huge_info(str(i).encode(), near, 1, 8) for i in range(256)]
    cases.add("crafted-huge-256-tensors", stream_with_fps(many), ERROR, "MAX_DECODED_ELEMENTS", ref)

    # allowed sizes with a payload far too small for them: decoded into an error quickly. No payload
    # length bounds the declared size (ANS codes runs of the most probable symbol for free, so an
    # all-zero tensor of any size has an empty payload): only sizes well below MAX_DECODED_ELEMENTS
    # stay inside this test's allocation limit.
    for dims in ((1 << 4, 1 << 8, 1 << 8), (1, 1, 1 << 20), (1, 1 << 20, 1), (3, 1 << 12, 2)):
        cases.add(f"crafted-short-payload-{'x'.join(map(str, dims))}", stream_with_fps([huge_info(b"", *dims)]),
                  ERROR, None, ref)
    cases.add("crafted-short-payload-tokens", stream_with_fps([huge_info(b"", 2, 1 << 17, 1, Layout.TOKENS)]),
              ERROR, None, ref)

    # a step-offset map that drives an exponent out of [QP_MIN, QP_MAX]
    for qp, offset in ((500, 20), (-250, -10)):
        info = huge_info(b"s", 2, 2, 3)
        info.ti_tokenwise_sq_params = SyntaxStructure(tsq_qp=qp, tsq_step_map_flag=1, tsq_channel_offsets_flag=0)
        coder = TokenwiseEntropyCoder()
        offsets = np.zeros((2, 3), dtype=np.int64)
        offsets[1, 2] = offset
        coder.code_tensor(np.ones((2, 2, 3), dtype=np.int64), offsets, (2, 2, 3), True)
        cases.add(f"crafted-exponent-{qp}{offset:+d}", stream_with_fps([info], [coder.finish()]), ERROR,
                  "step exponent", ref)
    # channel offsets that, added to in-range token offsets, drive an exponent out of range
    for qp, token_offset, channel_offset in ((500, 8, 8), (-250, -4, -4)):
        info = huge_info(b"c", 2, 2, 3)
        info.ti_tokenwise_sq_params = SyntaxStructure(tsq_qp=qp, tsq_step_map_flag=1, tsq_channel_offsets_flag=1)
        coder = TokenwiseEntropyCoder()
        offsets = np.zeros((2, 3), dtype=np.int64)
        offsets[0, 1] = token_offset
        coder.code_tensor(np.ones((2, 2, 3), dtype=np.int64), offsets, (2, 2, 3), True,
                          np.array([0, channel_offset]), True)
        cases.add(f"crafted-channel-exponent-{qp}{channel_offset:+d}", stream_with_fps([info], [coder.finish()]),
                  ERROR, "step exponent", ref)


CASES = build_cases()


def test_enough_cases():
    assert len(CASES) >= 200
    kinds = {c.values[1] for c in CASES}
    assert kinds == {ERROR, OK, EITHER, MISMATCH}


def decode_in_process(tmp_path, capsys, data):
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    out = tmp_path / "out.npz"
    capsys.readouterr()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        code = app.main(["-i", str(path), "-o", str(out)])
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr, out, seconds, peak


def check_outcome(kind, match, reference, code, stdout, stderr, out):
    if kind == OK or (kind == EITHER and code == 0):
        assert code == 0, stderr
        assert stderr in ("", NO_HASH_WARNING) and "***ERROR***" not in stdout
        with np.load(out) as archive:
            decoded = [archive[name] for name in archive.files]
        assert [tensor_md5(a) for a in decoded] == reference.md5s, "decoded OK but not the encoded features"
        md5_lines = [line for line in stdout.splitlines() if "[MD5:" in line]
        assert all(line.endswith("OK]") for line in md5_lines)
        assert md5_lines or stderr == NO_HASH_WARNING
        if kind == OK:
            assert len(md5_lines) in (0, len(reference.md5s))
            assert [a.shape for a in decoded] == [a.shape for a in reference.reconstruction.values()]
        return
    assert_clean_error(code, stdout, stderr, "decode", out)
    if kind == MISMATCH:
        assert "***ERROR***" in stdout
    if match:
        import re
        assert re.search(match, stderr), stderr
    if "***ERROR***" in stdout:
        assert "do not match the encoder's hash" in stderr


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("data,kind,match,reference", CASES)
def test_malformed_stream(tmp_path, capsys, data, kind, match, reference):
    code, stdout, stderr, out, seconds, peak = decode_in_process(tmp_path, capsys, data)
    check_outcome(kind, match, reference, code, stdout, stderr, out)
    assert seconds < MAX_SECONDS, f"took {seconds:.2f} s"
    assert peak < MAX_TRACED_BYTES, f"peak traced allocation {peak / 2**20:.1f} MiB"


CLI_CASES = ["chw-magic-zero", "chw-md5-wrong", "crafted-huge-chw-16777215x16777215x16777215",
             "three-reserved255-at2", "tokens-tdu-odd-length", "tokens-no-end",
             next(c.id for c in CASES if c.id.startswith("three-flip-payload-")),
             [c.id for c in CASES if c.id.startswith("tokens-cut")][-3]]


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_malformed_stream_cli(tmp_path, case_id):
    """A few of the cases through the real `decode` process: no traceback at the process level."""
    (param,) = [c for c in CASES if c.id == case_id]
    data, kind, match, reference = param.values
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    out = tmp_path / "out.npz"
    proc = run_cli("decode", "-i", path, "-o", out)
    check_outcome(kind, match, reference, proc.returncode, proc.stdout, proc.stderr, out)
