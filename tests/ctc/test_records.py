"""ctc/records.py: JSON Lines records per tool, a partial last line cut off on reading, the keys
of the records already done (for resuming a run)."""

import json

import pytest

from common.errors import InputError

from ctc.records import REFERENCE_TOOL, RecordStore, read_all


def coded(image, tool="uniform", qp=40, **extra):
    return {"image": image, "tool": tool, "point": json.dumps({"QP": qp}), "bits": 1000 + qp, "bpfp": 0.5,
            **extra}


def reference(image, label=3):
    return {"image": image, "tool": REFERENCE_TOOL, "point": None, "label": label,
            "prediction": {"top5": [label, 1, 2, 4, 5]}}


@pytest.fixture
def store(tmp_path):
    store = RecordStore(tmp_path)
    yield store
    store.close()


def test_folder_is_created(tmp_path):
    RecordStore(tmp_path / "out")
    assert (tmp_path / "out" / "records").is_dir()


def test_read_of_a_tool_without_records_is_empty(store):
    assert store.read("uniform") == []


def test_append_then_read_round_trip(store, tmp_path):
    records = [coded("a.png"), coded("b.png", qp=48, prediction={"top5": [1, 2, 3, 4, 5]}),
               coded("c.png", tool="featjnd", nested={"x": [1.5, None, "é"]})]
    for record in records:
        store.append(record)
    assert store.read("uniform") == records[:2]
    assert store.read("featjnd") == records[2:]
    # one file per tool, one line per record
    lines = (tmp_path / "records" / "uniform.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records[:2]


def test_records_are_flushed_at_once(tmp_path, store):
    store.append(coded("a.png"))
    # a second store (a resumed run) sees the record without close()
    assert RecordStore(tmp_path).read("uniform") == [coded("a.png")]


def test_records_survive_reopening(tmp_path):
    first = RecordStore(tmp_path)
    first.append(coded("a.png"))
    first.close()
    second = RecordStore(tmp_path)
    second.append(coded("b.png"))
    second.close()
    assert RecordStore(tmp_path).read("uniform") == [coded("a.png"), coded("b.png")]


@pytest.mark.parametrize("tail", [
    b'{"image": "c.png", "tool": "unif',             # cut inside the JSON
    b'{"image": "c.png", "tool": "uniform"}',        # valid JSON, but no newline: the write was cut
    b'\xff\xfe',                                     # not even UTF-8
])
def test_partial_last_line_is_dropped_and_truncated(tmp_path, tail):
    store = RecordStore(tmp_path)
    store.append(coded("a.png"))
    store.append(coded("b.png"))
    store.close()
    path = tmp_path / "records" / "uniform.jsonl"
    complete = path.read_bytes()
    path.write_bytes(complete + tail)

    store = RecordStore(tmp_path)
    assert store.read("uniform") == [coded("a.png"), coded("b.png")]
    assert path.read_bytes() == complete                # the file is cut back to the last complete line
    # appending after the cut gives a valid file
    store.append(coded("c.png"))
    store.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line) for line in lines[:-1]] == [coded("a.png"), coded("b.png"), coded("c.png")]
    assert RecordStore(tmp_path).read("uniform") == [coded("a.png"), coded("b.png"), coded("c.png")]


def test_only_a_partial_line(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "uniform.jsonl").write_bytes(b'{"image": "a.p')
    store = RecordStore(tmp_path)
    assert store.read("uniform") == []
    assert (folder / "uniform.jsonl").read_bytes() == b""
    store.append(coded("a.png"))
    store.close()
    assert RecordStore(tmp_path).read("uniform") == [coded("a.png")]


def test_complete_file_is_left_alone(tmp_path, store):
    store.append(coded("a.png"))
    path = tmp_path / "records" / "uniform.jsonl"
    before = path.read_bytes()
    store.read("uniform")
    assert path.read_bytes() == before


def test_truncation_while_the_append_handle_is_open(tmp_path, store):
    # the store appends, the run is "interrupted" by a partial write, the same store reads and
    # appends again: the handle in append mode writes after the cut
    store.append(coded("a.png"))
    path = tmp_path / "records" / "uniform.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"imag')
    assert store.read("uniform") == [coded("a.png")]
    store.append(coded("b.png"))
    assert store.read("uniform") == [coded("a.png"), coded("b.png")]


def test_done_keys_includes_the_reference(store):
    store.append(reference("a.png"))
    store.append(reference("b.png"))
    store.append(coded("a.png", qp=40))
    store.append(coded("a.png", qp=48))
    store.append(coded("b.png", tool="featjnd", qp=60))
    keys = store.done_keys(["uniform", "featjnd", "anchor_hevc"])
    assert keys == {
        ("a.png", REFERENCE_TOOL, None), ("b.png", REFERENCE_TOOL, None),
        ("a.png", "uniform", '{"QP": 40}'), ("a.png", "uniform", '{"QP": 48}'),
        ("b.png", "featjnd", '{"QP": 60}'),
    }


def test_done_keys_reference_without_point_field(store):
    record = reference("a.png")
    del record["point"]
    store.append(record)
    assert store.done_keys([]) == {("a.png", REFERENCE_TOOL, None)}


def test_done_keys_only_of_the_tools_asked_for(store):
    store.append(coded("a.png", tool="other"))
    store.append(coded("a.png"))
    assert store.done_keys(["uniform"]) == {("a.png", "uniform", '{"QP": 40}')}


def test_done_keys_skip_a_partial_record(tmp_path, store):
    store.append(coded("a.png"))
    with open(tmp_path / "records" / "uniform.jsonl", "ab") as f:
        f.write(json.dumps(coded("b.png")).encode())      # no newline: incomplete
    assert store.done_keys(["uniform"]) == {("a.png", "uniform", '{"QP": 40}')}


def test_read_all_includes_the_reference(tmp_path, store):
    store.append(reference("a.png"))
    store.append(coded("a.png"))
    store.append(coded("a.png", tool="featjnd", qp=60))
    everything = read_all(tmp_path, ["uniform", "featjnd", "anchor_hevc"])
    assert everything == {"uniform": [coded("a.png")], "featjnd": [coded("a.png", tool="featjnd", qp=60)],
                          "anchor_hevc": [], REFERENCE_TOOL: [reference("a.png")]}


def test_a_damaged_middle_line_is_an_error_and_nothing_is_cut(tmp_path):
    store = RecordStore(tmp_path)
    for image in ("a", "b", "c"):
        store.append({"image": image, "tool": "uniform", "point": "{}"})
    store.close()
    path = tmp_path / "records" / "uniform.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = b"xx"
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    with pytest.raises(InputError, match="uniform.jsonl:2: not a JSON record"):
        RecordStore(tmp_path).read("uniform")
    assert path.read_bytes() == before
