"""A minimal stand-in for CompressAI-Vision's summary script (scripts/metrics/gen_mpeg_cttc_csv.py),
written from its documented behaviour, for the tests of `ctc export`:

- it asserts that the dataset's name (-dn) appears, case-insensitively, in the last folder name of
  both --dataset_path and --result_path;
- it globs every summary.csv below the result path, recursively; a file's sequence is the first
  folder below the result path, and each sequence must have exactly --nb_operation_points files
  whose path contains its name;
- for an image dataset (its OIV6 branch) it concatenates the rows, sorts them by Dataset then
  qp (numbers), multiplies end_accuracy by 100 ("accuracy in % for MPEG template") and inserts
  an empty y_psnr column as the fifth.

No pandas here: rows are dicts, numbers parsed as pandas' read_csv would.
"""

import csv
import glob
import os
from pathlib import Path


def _parsed(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_results(result_path, nb_operation_points):
    path = os.path.normpath(str(result_path)) + "/"
    files = list(glob.iglob(os.path.join(path, "**", "summary.csv"), recursive=True))
    assert files, f"Found no summary.csv files below {path}"
    if nb_operation_points > 0:
        sequences = {file.split(path)[1].split("/")[0] for file in files}
        for sequence in sequences:
            count = len([f for f in files if sequence in f])
            assert count == nb_operation_points, f"Did not find {nb_operation_points} results for {sequence}"
    rows = []
    for file in files:
        with open(file, newline="") as handle:
            rows += [{key: _parsed(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    return rows


def generate_image_csv(result_path, dataset_path, dataset_name, nb_operation_points):
    assert (dataset_name.lower() in Path(dataset_path).name.lower()
            and dataset_name.lower() in Path(result_path).name.lower()), \
        "Please check correspondance between input dataset name and result directory"
    rows = sorted(read_results(result_path, nb_operation_points), key=lambda row: (row["Dataset"], row["qp"]))
    final = []
    for row in rows:
        row = dict(row, end_accuracy=row["end_accuracy"] * 100)
        items = list(row.items())
        final.append(dict(items[:4] + [("y_psnr", "")] + items[4:]))
    return final
