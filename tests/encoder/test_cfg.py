"""encoder/cfg.py and encoder/options.py: VTM-style cfg parsing and precedence."""

import math

import pytest

from common.errors import ConfigError
from encoder.cfg import convert, parse_cfg_text, resolve_options
from encoder.options import OPTIONS, OPTIONS_BY_NAME, default_options, help_text


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_come_from_the_table():
    assert default_options() == {o.name: o.default for o in OPTIONS}
    assert set(OPTIONS_BY_NAME) == {o.name for o in OPTIONS}
    assert resolve_options([], []) == default_options()
    for option in OPTIONS:                         # every default passes its own checks
        text = str(int(option.default)) if option.type is bool else str(option.default)
        assert convert(option.name, text, "test") == option.default


def test_comments_blank_lines_and_spacing():
    text = """
# a comment line
   # an indented comment

QP:44
RoundingOffset   :   0.25    # trailing comment: with a colon
DecodedFeatureHash : off
\t
Tool : tokenwise#no space before the comment
"""
    assert parse_cfg_text(text, "x.cfg") == {"QP": 44, "RoundingOffset": 0.25, "DecodedFeatureHash": False,
                                             "Tool": "tokenwise"}


@pytest.mark.parametrize("text,value", [("1", True), ("true", True), ("Yes", True), ("ON", True),
                                        ("0", False), ("False", False), ("no", False), ("off", False)])
def test_bool_spellings(text, value):
    assert parse_cfg_text(f"DecodedFeatureHash : {text}", "x.cfg") == {"DecodedFeatureHash": value}


def test_later_files_win_and_the_command_line_wins_last(tmp_path):
    a = write(tmp_path, "a.cfg", "QP : 10\nRoundingOffset : 0.3\n")
    b = write(tmp_path, "b.cfg", "QP : 20\n")
    c = write(tmp_path, "c.cfg", "# only a comment\n")
    assert resolve_options([a], [])["QP"] == 10
    assert resolve_options([a, b], [])["QP"] == 20
    assert resolve_options([b, a], [])["QP"] == 10
    opts = resolve_options([a, b, c], [("QP", "30")])
    assert opts["QP"] == 30 and opts["RoundingOffset"] == 0.3 and opts["DecodedFeatureHash"] is True
    assert resolve_options([a], [("QP", "31"), ("QP", "32")])["QP"] == 32
    assert resolve_options([a], [("RoundingOffset", "0.5")])["RoundingOffset"] == 0.5


@pytest.mark.parametrize("line", ["QP 40", "QP", ": 40", "QP :", "QP :   # comment only", "= 3"])
def test_malformed_lines(line):
    with pytest.raises(ConfigError, match=r"x\.cfg:2: malformed line"):
        parse_cfg_text(f"# first line\n{line}\n", "x.cfg")


@pytest.mark.parametrize("key", ["Qp", "qp", "QPx", "Unknown", "--QP"])
def test_unknown_keys(key):
    with pytest.raises(ConfigError, match=rf"x\.cfg:1: unknown option '{key}'"):
        parse_cfg_text(f"{key} : 1", "x.cfg")
    with pytest.raises(ConfigError, match="command line: unknown option"):
        resolve_options([], [(key, "1")])


@pytest.mark.parametrize("key,text", [
    ("QP", "abc"), ("QP", "4.5"), ("QP", "1e3"), ("QP", ""), ("RoundingOffset", "half"),
    ("DecodedFeatureHash", "maybe"), ("DecodedFeatureHash", "2"), ("Tool", "jnd")])
def test_bad_value_types(key, text):
    with pytest.raises(ConfigError, match=key):
        convert(key, text, "command line")


@pytest.mark.parametrize("key,text", [("QP", "512"), ("QP", "-257"), ("QP", "100000"), ("RoundingOffset", "0.51"),
                                      ("RoundingOffset", "-0.01"), ("RoundingOffset", "nan"),
                                      ("RoundingOffset", "inf")])
def test_out_of_range_values(key, text):
    with pytest.raises(ConfigError, match=f"{key} must"):
        convert(key, text, "command line")


@pytest.mark.parametrize("key,text,value", [("QP", "511", 511), ("QP", "-256", -256), ("QP", " 7 ", 7),
                                            ("RoundingOffset", "0", 0.0), ("RoundingOffset", "0.5", 0.5)])
def test_range_boundaries_are_accepted(key, text, value):
    result = convert(key, text, "command line")
    assert result == value and not (isinstance(result, float) and math.isnan(result))


def test_missing_cfg_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read cfg file"):
        resolve_options([str(tmp_path / "missing.cfg")], [])
    with pytest.raises(ConfigError, match="cannot read cfg file"):
        resolve_options([str(tmp_path)], [])                    # a folder


def test_error_names_the_file_and_line(tmp_path):
    good = write(tmp_path, "good.cfg", "QP : 1\n")
    bad = write(tmp_path, "bad.cfg", "QP : 1\n\n# c\nRoundingOffset : x\n")
    with pytest.raises(ConfigError, match=r"bad\.cfg:4: RoundingOffset needs a float"):
        resolve_options([good, bad], [])


def test_help_text_lists_every_option():
    text = help_text()
    for option in OPTIONS:
        assert f"--{option.name}=<{option.type.__name__}>" in text
        assert option.help[:30] in text


def test_repository_cfg_files_parse():
    from tests.helpers import REPO
    for path in sorted((REPO / "cfg").glob("*.cfg")):
        options = resolve_options([str(path)], [])
        assert set(options) == set(OPTIONS_BY_NAME)


def test_a_key_given_twice_in_one_file_names_both_lines():
    with pytest.raises(ConfigError, match=r"f.cfg:3: QP is already set on line 1"):
        parse_cfg_text("QP : 30\nTool : tokenwise\nQP : 40\n", "f.cfg")


def test_long_values_and_control_characters_are_shortened_and_escaped():
    with pytest.raises(ConfigError) as info:
        parse_cfg_text("QP : " + "9x" * 500_000 + "\n", "f.cfg")
    assert len(str(info.value)) < 200 and "(1000000 characters)" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_cfg_text("Tool : a\x00b\x1b[31m\n", "f.cfg")
    assert "\x00" not in str(info.value) and "\x1b" not in str(info.value) and "\\x00" in str(info.value)


def test_a_cfg_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.cfg"
    path.write_bytes("QP : 30  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        resolve_options([str(path)], [])
