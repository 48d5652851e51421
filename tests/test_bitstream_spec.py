"""docs/bitstream.md is generated from the syntax declarations and must be current."""

import os

from common import specdoc

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "bitstream.md")


def test_spec_is_up_to_date():
    with open(DOC, encoding="utf-8") as f:
        assert f.read() == specdoc.render(), "docs/bitstream.md is out of date: run `make spec`"


def test_every_element_has_semantics_and_every_semantics_an_element():
    names = specdoc.element_names()
    assert names and len(names) == len(set(names))
    assert set(names) == set(specdoc.semantics())


def test_tables_name_every_syntax_structure():
    text = specdoc.render()
    for function in specdoc.syntax_functions():
        assert f"### {function.name}( )" in text
