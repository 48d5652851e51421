"""ctc/config.py: every key validated once, errors that name the key, rate points, the
fingerprint of a run and the dataset root."""

import pytest

from common.errors import ConfigError
from ctc.config import (CONFIG_FOLDER, REPO, CtcConfig, RatePoint, dataset_root, load_config, parse_config,
                        resolve_config_path, shipped_names)

SHIPPED = sorted(path.stem for path in CONFIG_FOLDER.glob("*.yaml"))


def classification():
    return {
        "name": "t",
        "description": "unit test",
        "dataset": {"kind": "package_images", "package": "skimage", "labels": {"chelsea.png": 281}},
        "task": {"network": "efficientnet-lite0", "split": "backbone"},
        "tools": {
            "uniform": {"cfg": "cfg/uniform.cfg", "rate_points": [40, 48]},
            "featjnd": {"cfg": "cfg/featjnd.cfg", "rate_points": [{"QP": 60, "NoiseBudget": 2.5}, 70]},
            "anchor_hevc": {"cfg": "cfg/anchor_hevc.cfg", "rate_points": [37, 51]},
            "image_anchor": {"kind": "image", "rate_points": [32, 47]},
        },
        "anchor": "anchor_hevc",
        "report": {"metrics": ["agreement", "top1"], "bootstrap": 10, "near_lossless_drop": 0.02, "seed": 4},
    }


def detection():
    return {
        "name": "d",
        "dataset": {"kind": "coco", "path": "/nonexistent", "images": "val2017",
                    "annotations": "annotations/instances_val2017.json"},
        "task": {"network": "maskrcnn_r50fpn", "split": "fpn", "weights": "random",
                 "options": {"min_size": 800}},
        "tools": {"uniform": {"cfg": "cfg/uniform.cfg", "rate_points": [40, 48]}},
        "anchor": "uniform",
    }


def fails(raw, *fragments):
    """parse_config(raw) raises a ConfigError whose message holds every fragment."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "test.yaml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- valid configurations

@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads(name):
    config = load_config(name)
    assert isinstance(config, CtcConfig)
    assert config.name == name                              # the name is the file's stem
    assert config.anchor in [tool.name for tool in config.tools]
    assert config.source == f"ctc/cfg/{name}.yaml"
    assert len(config.fingerprint()) == 16


def test_shipped_configs_exist_and_are_listed():
    assert "smoke" in SHIPPED
    assert shipped_names() == SHIPPED


def test_parse_classification_config():
    config = parse_config(classification(), "test.yaml")
    assert config.is_classification
    assert [tool.name for tool in config.tools] == ["uniform", "featjnd", "anchor_hevc", "image_anchor"]
    assert config.metrics == ("agreement", "top1")
    assert (config.bootstrap, config.near_lossless_drop, config.seed) == (10, 0.02, 4)
    assert config.description == "unit test"
    uniform = config.tool("uniform")
    assert uniform.kind == "features" and uniform.cfg == "cfg/uniform.cfg" and uniform.label == "uniform"
    image = config.tool("image_anchor")
    assert image.kind == "image" and image.cfg == "" and image.options == {}


def test_defaults():
    raw = classification()
    del raw["report"], raw["description"]
    config = parse_config(raw, "test.yaml")
    assert config.metrics == ("top1", "agreement")
    assert (config.bootstrap, config.near_lossless_drop, config.seed) == (1000, 0.01, 0)
    assert config.description == ""
    detect = parse_config(detection(), "test.yaml")
    assert not detect.is_classification
    assert detect.metrics == ("bbox_ap50", "bbox_ap")


def test_integer_rate_point_is_a_qp():
    config = parse_config(classification(), "test.yaml")
    assert config.tool("uniform").rate_points == (RatePoint({"QP": 40}), RatePoint({"QP": 48}))
    assert config.tool("image_anchor").rate_points[0].options == {"QP": 32}


def test_mapping_rate_point_keeps_its_options():
    point = parse_config(classification(), "test.yaml").tool("featjnd").rate_points[0]
    assert point.options == {"QP": 60, "NoiseBudget": 2.5}
    assert point.label == "QP=60 NoiseBudget=2.5"
    assert point.key == '{"NoiseBudget": 2.5, "QP": 60}'           # canonical: sorted keys


def test_encoder_options_apply_cfg_then_tool_options_then_point():
    raw = classification()
    raw["tools"]["featjnd"]["options"] = {"NoiseBudget": 1.0, "JndEpsilon": 0.05}
    tool = parse_config(raw, "test.yaml").tool("featjnd")
    first, second = (tool.encoder_options(point) for point in tool.rate_points)
    assert first["QP"] == 60 and first["NoiseBudget"] == 2.5        # the point wins over the tool
    assert second["QP"] == 70 and second["NoiseBudget"] == 1.0      # the tool wins over the cfg
    assert first["JndEpsilon"] == second["JndEpsilon"] == 0.05
    assert first["StepAllocation"] == "jnd"                         # from cfg/featjnd.cfg


def test_label_option():
    raw = classification()
    raw["tools"]["uniform"]["label"] = "Uniform SQ"
    assert parse_config(raw, "test.yaml").tool("uniform").label == "Uniform SQ"


def test_detection_segm_metrics_with_mask_rcnn():
    raw = detection()
    raw["report"] = {"metrics": ["segm_ap50", "bbox_ap"]}
    assert parse_config(raw, "test.yaml").metrics == ("segm_ap50", "bbox_ap")


def test_integer_near_lossless_drop_is_accepted_as_float_only_in_range():
    raw = classification()
    raw["report"]["near_lossless_drop"] = 1                 # int where a float is expected: typed OK, range not
    fails(raw, "report.near_lossless_drop must be in (0, 1)")


# ---------------------------------------------------------------- unknown keys

@pytest.mark.parametrize("where", ["top", "dataset", "task", "tool", "image_tool", "report"])
def test_unknown_key_at_every_level_names_the_key(where):
    raw = classification()
    target = {"top": raw, "dataset": raw["dataset"], "task": raw["task"], "tool": raw["tools"]["uniform"],
              "image_tool": raw["tools"]["image_anchor"], "report": raw["report"]}[where]
    target["bogus_key"] = 1
    fails(raw, "unknown key 'bogus_key'")


def test_unknown_tool_key_names_the_tool():
    raw = classification()
    raw["tools"]["featjnd"]["rate_point"] = [40]            # typo of rate_points
    fails(raw, "tools.featjnd", "'rate_point'")


# ---------------------------------------------------------------- missing keys and types

@pytest.mark.parametrize("path", [
    ("name",), ("dataset",), ("task",), ("tools",), ("anchor",),
    ("dataset", "kind"), ("task", "network"), ("task", "split"), ("tools", "uniform", "rate_points"),
])
def test_missing_required_key(path):
    raw = classification()
    target = raw
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    fails(raw, f"missing required key '{path[-1]}'")


def test_required_key_set_to_none_is_missing():
    raw = classification()
    raw["anchor"] = None
    fails(raw, "missing required key 'anchor'")


@pytest.mark.parametrize("path, value", [
    (("name",), 3),
    (("anchor",), ["uniform"]),
    (("dataset",), "coco"),
    (("tools",), ["uniform"]),
    (("dataset", "labels"), ["chelsea.png"]),
    (("task", "options"), "min_size=800"),
    (("tools", "uniform", "rate_points"), 40),
    (("tools", "uniform", "cfg"), 1),
    (("report", "bootstrap"), 10.5),
    (("report", "bootstrap"), True),                      # a bool is not an int
    (("report", "seed"), "0"),
    (("report", "near_lossless_drop"), "0.01"),
    (("report", "metrics"), "top1"),
])
def test_wrong_type_names_the_key(path, value):
    raw = classification()
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    fails(raw, f"'{path[-1]}' must be")


def test_document_that_is_not_a_mapping():
    fails(["name", "t"], "expected a mapping")
    fails(None, "expected a mapping")
    raw = classification()
    raw["tools"]["uniform"] = [40, 48]
    fails(raw, "tools.uniform", "expected a mapping")


# ---------------------------------------------------------------- choices

@pytest.mark.parametrize("path, value, fragment", [
    (("dataset", "kind"), "imagenet", "dataset.kind"),
    (("task", "network"), "resnet50", "task.network"),
    (("task", "split"), "fpn", "task.split"),                     # fpn is an R-CNN split
    (("tools", "uniform", "kind"), "video", "tools.uniform.kind"),
])
def test_unknown_choice(path, value, fragment):
    raw = classification()
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    fails(raw, fragment, f"'{value}' is not one of")


def test_detection_split_must_be_fpn():
    raw = detection()
    raw["task"]["split"] = "backbone"
    fails(raw, "task.split", "'backbone'")


def test_anchor_must_be_a_tool():
    raw = classification()
    raw["anchor"] = "vtm"
    fails(raw, "anchor 'vtm'")


def test_empty_tools():
    raw = classification()
    raw["tools"] = {}
    fails(raw, "tools is empty")


@pytest.mark.parametrize("metric", ["bbox_ap", "top1x", "psnr"])
def test_metric_not_valid_for_classification(metric):
    raw = classification()
    raw["report"]["metrics"] = ["top1", metric]
    fails(raw, "report.metrics", f"'{metric}'")


def test_metric_not_valid_for_detection():
    raw = detection()
    raw["report"] = {"metrics": ["top1"]}
    fails(raw, "report.metrics", "'top1'")


def test_segm_metrics_need_mask_rcnn():
    raw = detection()
    raw["task"]["network"] = "fasterrcnn_r50fpn"
    raw["report"] = {"metrics": ["bbox_ap", "segm_ap"]}
    fails(raw, "segm")
    raw["report"] = {"metrics": ["bbox_ap", "bbox_ap75"]}
    assert parse_config(raw, "test.yaml").metrics == ("bbox_ap", "bbox_ap75")


@pytest.mark.parametrize("key, value", [("bootstrap", -1), ("bootstrap", 100001),
                                        ("near_lossless_drop", 0.0), ("near_lossless_drop", 1.0)])
def test_report_ranges(key, value):
    raw = classification()
    raw["report"][key] = value
    fails(raw, f"report.{key}")


def test_report_range_limits_are_accepted():
    raw = classification()
    raw["report"]["bootstrap"] = 0
    assert parse_config(raw, "test.yaml").bootstrap == 0


# ---------------------------------------------------------------- tools and rate points

def test_features_tool_needs_a_cfg():
    raw = classification()
    del raw["tools"]["uniform"]["cfg"]
    fails(raw, "tools.uniform", "cfg")


def test_features_tool_cfg_must_exist():
    raw = classification()
    raw["tools"]["uniform"]["cfg"] = "cfg/no_such.cfg"
    fails(raw, "tools.uniform", "cfg/no_such.cfg")


@pytest.mark.parametrize("extra", [{"cfg": "cfg/uniform.cfg"}, {"options": {"QP": 40}}])
def test_image_anchor_takes_no_cfg_or_options(extra):
    raw = classification()
    raw["tools"]["image_anchor"].update(extra)
    fails(raw, "tools.image_anchor", "image anchor")


def test_image_anchor_rate_points_set_only_qp():
    raw = classification()
    raw["tools"]["image_anchor"]["rate_points"] = [32, {"QP": 37, "NoiseBudget": 1.0}]
    fails(raw, "tools.image_anchor.rate_points[1]", "x265 QP")


def test_image_anchor_mapping_rate_point_with_qp():
    raw = classification()
    raw["tools"]["image_anchor"]["rate_points"] = [{"QP": 32}, 37]
    assert [p.options for p in parse_config(raw, "test.yaml").tool("image_anchor").rate_points] == \
        [{"QP": 32}, {"QP": 37}]


@pytest.mark.parametrize("points", [[40, 40], [40, {"QP": 40}], [{"QP": 60, "NoiseBudget": 2.5},
                                                                 {"NoiseBudget": 2.5, "QP": 60}],
                                    [40, {"QP": "40"}], [40, {"QP": 40, "NoiseBudget": 0}]])
def test_duplicate_rate_points_are_rejected(points):
    """Rate points are compared by the encoder options they resolve to, not by how they are written."""
    raw = classification()
    raw["tools"]["featjnd"]["rate_points"] = points
    fails(raw, "tools.featjnd", "same encoder options")


@pytest.mark.parametrize("point", [{"QP": True}, {"QP": "abc"}, {"QP": 52}, {"QP": -1}, 500])
def test_image_anchor_qp_is_checked_at_load_time(point):
    raw = classification()
    raw["tools"]["image_anchor"]["rate_points"] = [32, point]
    fails(raw, "tools.image_anchor.rate_points[1]")


def test_boolean_option_values_are_refused():
    raw = classification()
    raw["tools"]["featjnd"]["rate_points"] = [{"QP": True}]
    fails(raw, "tools.featjnd.rate_points[0]", "boolean")


def test_repeated_metrics_are_refused():
    raw = classification()
    raw["report"] = {"metrics": ["top1", "top1"]}
    fails(raw, "report.metrics", "repeats")


def test_empty_rate_points():
    raw = classification()
    raw["tools"]["uniform"]["rate_points"] = []
    fails(raw, "tools.uniform", "empty")


@pytest.mark.parametrize("value", [True, 40.0, "40", {}, None, [40]])
def test_bad_rate_point_values(value):
    raw = classification()
    raw["tools"]["uniform"]["rate_points"] = [48, value]
    fails(raw, "tools.uniform.rate_points[1]")


def test_unknown_fcrs_option_in_tool_options_is_a_load_error():
    raw = classification()
    raw["tools"]["uniform"]["options"] = {"NoSuchOption": 1}
    fails(raw, "tools.uniform", "NoSuchOption")


def test_unknown_fcrs_option_in_a_rate_point_is_a_load_error():
    raw = classification()
    raw["tools"]["featjnd"]["rate_points"] = [60, {"QP": 70, "NoiseBudgett": 2.0}]
    fails(raw, "tools.featjnd", "QP=70 NoiseBudgett=2.0", "NoiseBudgett")


@pytest.mark.parametrize("options", [{"QP": "high"}, {"QP": 40.5}, {"QP": 100000}, {"NoiseBudget": -1.0},
                                     {"StepAllocation": "best"}])
def test_bad_fcrs_option_values_are_load_errors(options):
    raw = classification()
    raw["tools"]["featjnd"]["rate_points"] = [60, options]
    fails(raw, "tools.featjnd")


def test_bool_fcrs_option_is_written_as_0_or_1():
    raw = classification()
    raw["tools"]["uniform"]["options"] = {"DecodedFeatureHash": False}      # uniform.cfg sets it to 1
    tool = parse_config(raw, "test.yaml").tool("uniform")
    assert tool.encoder_options(tool.rate_points[0])["DecodedFeatureHash"] is False


# ---------------------------------------------------------------- fingerprint

def test_fingerprint_is_stable():
    assert parse_config(classification(), "a.yaml").fingerprint() == \
        parse_config(classification(), "b.yaml").fingerprint()
    assert load_config("smoke").fingerprint() == load_config("smoke").fingerprint()


@pytest.mark.parametrize("change", [
    lambda raw: raw["tools"]["uniform"]["rate_points"].__setitem__(1, 49),
    lambda raw: raw["tools"]["featjnd"]["rate_points"].__setitem__(0, {"QP": 60, "NoiseBudget": 2.0}),
    lambda raw: raw["tools"]["image_anchor"]["rate_points"].__setitem__(0, 33),
    lambda raw: raw["tools"]["uniform"].__setitem__("options", {"RoundingOffset": 0.25}),
    lambda raw: raw["tools"]["uniform"].__setitem__("cfg", "cfg/featjnd.cfg"),
    lambda raw: raw["task"].__setitem__("network", "efficientnet-lite1"),
    lambda raw: raw["dataset"].__setitem__("kind", "image_folder"),
    lambda raw: raw["tools"].__setitem__("extra", {"cfg": "cfg/uniform.cfg", "rate_points": [40]}),
])
def test_fingerprint_changes_with_what_determines_a_record(change):
    raw = classification()
    change(raw)
    assert parse_config(raw, "t.yaml").fingerprint() != parse_config(classification(), "t.yaml").fingerprint()


@pytest.mark.parametrize("change", [
    lambda raw: raw["report"].__setitem__("bootstrap", 500),
    lambda raw: raw["report"].__setitem__("metrics", ["top1"]),
    lambda raw: raw.__setitem__("description", "other"),
    lambda raw: raw.__setitem__("anchor", "uniform"),
    lambda raw: raw["tools"]["uniform"].__setitem__("label", "U"),
    lambda raw: raw["task"].__setitem__("weights", "other.pth"),
    lambda raw: raw["dataset"].__setitem__("path", "/elsewhere"),
    # the same resolved options: QP 40 is uniform.cfg's own QP
    lambda raw: raw["tools"]["uniform"].__setitem__("options", {"QP": 40}),
])
def test_fingerprint_ignores_what_does_not_change_a_record(change):
    raw = classification()
    change(raw)
    assert parse_config(raw, "t.yaml").fingerprint() == parse_config(classification(), "t.yaml").fingerprint()


# ---------------------------------------------------------------- files

def test_resolve_config_path(tmp_path):
    assert resolve_config_path("smoke") == CONFIG_FOLDER / "smoke.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("name: mine\n")
    assert resolve_config_path(str(own)) == own
    with pytest.raises(ConfigError, match="no_such_config") as info:
        resolve_config_path("no_such_config")
    assert "smoke" in str(info.value)                     # lists the shipped ones


def test_load_config_from_a_file_outside_the_repository(tmp_path):
    import yaml

    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(classification()))
    config = load_config(str(path))
    assert config.source == str(path)
    assert config.fingerprint() == parse_config(classification(), "x").fingerprint()


def test_load_config_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))


def test_load_config_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(str(path))


def test_load_config_validation_error_names_the_file(tmp_path):
    import yaml

    raw = classification()
    raw["report"]["bootstrapp"] = 1
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert "typo.yaml" in str(info.value) and "bootstrapp" in str(info.value)


# ---------------------------------------------------------------- dataset root

def test_dataset_root_without_a_path_asks_for_data():
    raw = detection()
    del raw["dataset"]["path"]
    with pytest.raises(ConfigError, match="--data"):
        dataset_root(parse_config(raw, "t.yaml"), None)


def test_dataset_root_missing_folder(tmp_path):
    config = parse_config(detection(), "t.yaml")
    with pytest.raises(ConfigError, match="not found"):
        dataset_root(config, None)                          # the config's /nonexistent
    with pytest.raises(ConfigError, match="not found"):
        dataset_root(config, str(tmp_path / "missing"))


def test_dataset_root_data_overrides_the_config_path(tmp_path):
    config = parse_config(detection(), "t.yaml")
    assert dataset_root(config, str(tmp_path)) == tmp_path
    raw = detection()
    raw["dataset"]["path"] = str(tmp_path)
    assert dataset_root(parse_config(raw, "t.yaml"), None) == tmp_path


def test_dataset_root_of_package_images_is_none(tmp_path):
    config = parse_config(classification(), "t.yaml")
    assert dataset_root(config, None) is None
    assert dataset_root(config, str(tmp_path)) is None


def test_repo_points_at_the_repository():
    assert (REPO / "cfg" / "uniform.cfg").is_file() and CONFIG_FOLDER == REPO / "ctc" / "cfg"


@pytest.mark.parametrize("baselines", [["nope"], ["anchor_hevc"]])
def test_baselines_name_a_tool_other_than_the_anchor(baselines):
    raw = classification()
    raw["anchor"] = "anchor_hevc"
    raw["report"]["baselines"] = baselines
    fails(raw, "report.baselines", baselines[0])


def test_baselines_are_kept_in_order():
    raw = classification()
    raw["anchor"] = "anchor_hevc"
    raw["report"]["baselines"] = ["featjnd", "uniform"]
    assert parse_config(raw, "test.yaml").baselines == ("featjnd", "uniform")


def test_yolov5n_splits_and_rate_axis():
    raw = detection()
    raw["task"] = {"network": "yolov5n", "split": "neck"}
    raw["report"] = {"rate": "bpp"}
    config = parse_config(raw, "test.yaml")
    assert config.rate_axis == "bpp" and not config.is_classification
    raw["task"]["split"] = "backbone"
    assert parse_config(raw, "test.yaml").task["split"] == "backbone"
    raw["task"]["split"] = "fpn"
    fails(raw, "task.split", "'fpn'")
    raw["task"]["split"] = "neck"
    raw["report"] = {"rate": "bits"}
    fails(raw, "report.rate", "'bits' is not one of")
    assert parse_config(detection(), "test.yaml").rate_axis == "bpfp"        # the default


def test_coco_yolov5n_anchor_packs_one_frame():
    config = load_config("coco_yolov5n")
    assert config.rate_axis == "bpp" and config.metrics[0] == "bbox_ap50"
    anchor = config.tool(config.anchor)
    assert all(anchor.encoder_options(point)["AnchorPacking"] == "frame" for point in anchor.rate_points)
    assert {tool.kind for tool in config.tools} == {"features", "image"}


def test_fingerprint_names_the_lmsfc_models_by_hash(monkeypatch):
    """Records of a model retrained under the same name must not mix with the old ones."""
    from dataclasses import dataclass

    from encoder.tools.lmsfc import coder

    raw = detection()
    raw["tools"] = {"lmsfc": {"cfg": "cfg/lmsfc.cfg", "options": {"LmsfcModels": "conformance"},
                              "rate_points": [0, 8]}}
    raw["anchor"] = "lmsfc"
    before = parse_config(raw).fingerprint()

    @dataclass
    class Retrained:
        hash: str = "0" * 64

    monkeypatch.setitem(coder._MODELS, "conformance", Retrained())
    assert parse_config(raw).fingerprint() != before
