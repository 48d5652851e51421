"""A run's records: one JSON object per (image, tool, rate point), one JSON Lines file per tool.

    OUT/records/<tool>.jsonl         coded records of the tool
    OUT/records/uncompressed.jsonl   per image: label, reference prediction, front / back times

Only the parent process writes (workers return records), appending a whole line
and flushing it, so an interrupted run leaves at most one partial last line:
`RecordStore` drops it when it opens the folder again and the run resumes from
the records that are complete.

Record fields (coded records):
    image, tool, point (the rate point's options as canonical JSON), bits (whole FCRS
    stream, or the image anchor's HEVC stream), feature_points, pixels (input image as
    read), bpfp, bpp, mse, nrmse (||f - f^|| / ||f||), encode_s, decode_s, nn_part_1_s
    (image anchor: front half on the decoded image), nn_part_2_s, md5 ('ok', 'mismatch',
    'absent'), prediction (the task's, e.g. top5 or COCO detections); feature anchors also
    inner_bits (the inner video streams alone) and inner_encode_s (the external encoder alone),
    the image anchor image_psnr (dB over RGB at the input size); token-wise streams with a
    step-offset map step_map_bits (the map's ideal code length, −log2 P, of the payload)
"""

from __future__ import annotations

import json
from pathlib import Path

from common.errors import InputError

REFERENCE_TOOL = "uncompressed"
# Wall times: the only fields two runs of one configuration may differ in (any backend, any workers).
TIMING_FIELDS = ("encode_s", "decode_s", "nn_part_1_s", "nn_part_2_s", "inner_encode_s")


class RecordStore:
    def __init__(self, out_dir):
        self.folder = Path(out_dir) / "records"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files = {}

    def _path(self, tool):
        return self.folder / f"{tool}.jsonl"

    def iter_records(self, tool):
        """The complete records of one tool, streamed. A damaged last line (an interrupted write)
        is cut off once the file has been read; a damaged line before it means the file was
        edited or corrupted: InputError, nothing cut."""
        path = self._path(tool)
        if not path.is_file():
            return
        good_bytes, damaged_line = 0, None
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if damaged_line is not None:
                    raise InputError(f"{path}:{damaged_line}: not a JSON record; the records file is damaged "
                                     "(delete the line or the run folder)")
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("partial line")
                    record = json.loads(line)
                except ValueError:
                    damaged_line = number
                    continue
                good_bytes += len(line)
                yield record
        if damaged_line is not None:
            with open(path, "r+b") as f:
                f.truncate(good_bytes)

    def read(self, tool):
        return list(self.iter_records(tool))

    def done_keys(self, tools):
        """{(image, tool, point)} of the complete records (point None for the reference)."""
        keys = set()
        for tool in list(tools) + [REFERENCE_TOOL]:
            for record in self.iter_records(tool):
                keys.add((record["image"], record["tool"], record.get("point")))
        return keys

    def append(self, record):
        tool = record["tool"]
        f = self._files.get(tool)
        if f is None:
            f = self._files[tool] = open(self._path(tool), "a", encoding="utf-8")
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
        f.flush()

    def close(self):
        for f in self._files.values():
            f.close()
        self._files.clear()


def records_without_timing(out_dir, tool_names):
    """{tool: records sorted by (image, point), timing fields removed}: what two runs of one
    configuration must agree on exactly, whatever ran them and in whichever order."""
    store = RecordStore(out_dir)
    return {tool: sorted(({k: v for k, v in record.items() if k not in TIMING_FIELDS}
                          for record in store.iter_records(tool)),
                         key=lambda record: (record["image"], str(record["point"])))
            for tool in list(tool_names) + [REFERENCE_TOOL]}


def read_all(out_dir, tool_names):
    """{tool: [records]} including the reference, for the report."""
    store = RecordStore(out_dir)
    return {tool: store.read(tool) for tool in list(tool_names) + [REFERENCE_TOOL]}
