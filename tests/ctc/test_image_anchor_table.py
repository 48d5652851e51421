"""`python -m ctc.image_anchor`: its table is read from a CTC run of the image anchor alone."""

import subprocess
import sys

import pytest

from tests.ctc.test_run import needs_hevc
from tests.helpers import REPO

IMAGENET_DEV = REPO.parent / "shared" / "data" / "imagenet-dev"


@needs_hevc
@pytest.mark.skipif(not IMAGENET_DEV.is_dir(), reason="../shared/data/imagenet-dev not present")
def test_the_table_comes_from_the_runners_records(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "ctc.image_anchor", "--data", str(IMAGENET_DEV), "--limit", "2",
                           "--qps", "42,51", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Image anchor: 2 images of") and "8-bit 4:2:0 intra" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in ("42", "51")}
    assert float(rows["42"][1]) > float(rows["51"][1]) > 0                      # bpp falls with the QP
    assert 10 < float(rows["51"][2]) < float(rows["42"][2]) < 60                # PSNR dB too
    assert (out / "records" / "image_anchor.jsonl").read_text().count("\n") == 4
    again = subprocess.run([sys.executable, "-m", "ctc.image_anchor", "--data", str(IMAGENET_DEV), "--limit", "2",
                            "--qps", "42,51", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and again.stdout.splitlines()[2:] == lines[2:]      # resumed: nothing recomputed


def test_a_missing_data_folder_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ctc.image_anchor", "--data", str(tmp_path / "none"), "--out",
                           str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("image_anchor: error: ") and len(done.stderr.strip().splitlines()) == 1, \
        done.stderr
