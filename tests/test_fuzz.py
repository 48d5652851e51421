"""The seeded mutation fuzzer (tests/fuzz.py) in the suite: 2,000 cases over the conformance
streams of every tool; `make fuzz` runs 20,000."""

from tests.fuzz import run


def test_no_mutated_stream_passes_with_a_wrong_output_crashes_or_runs_long():
    outcomes, failures, table = run(2000, seed=1)
    assert not failures, table + "\n" + "\n".join(failures[:20])
    assert sum(outcomes.values()) == 2000
    assert outcomes["error"] and outcomes["mismatch"] and outcomes["same"]     # every path exercised
