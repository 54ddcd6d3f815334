"""Layout helpers of the ``flame`` CLI: tables fit 100 columns, durations and bars read well."""

from __future__ import annotations

from flame.cli import format as fmt


def test_a_wide_table_is_cut_to_fit_and_marks_the_cut() -> None:
    rows = [(1, "x" * 300, "open", "y" * 80), (22, "short", "closed", None)]
    text = fmt.table(("ID", "NAME", "STATE", "NOTE"), rows)
    lines = text.splitlines()
    assert all(len(line) <= fmt.WIDTH for line in lines), [len(x) for x in lines]
    assert "…" in lines[1]
    assert lines[2].split()[:3] == ["22", "short", "closed"]
    assert lines[2].rstrip().endswith("-"), "None prints as '-'"


def test_a_narrow_table_is_left_alone() -> None:
    text = fmt.table(("A", "B"), [("one", 2), ("three", "multi\nline")])
    assert text.splitlines() == ["A      B", "one    2", "three  multi line"]


def test_durations_and_bars() -> None:
    assert fmt.duration(1000, 1850) == "850ms"
    assert fmt.duration(0, 1850) == "-"
    assert fmt.duration(1000, 13_300) == "12.3s"
    assert fmt.duration(1, 245_001) == "4m05s"
    assert fmt.bar(5, 10, 10) == "[#####.....]"
    assert fmt.bar(0, 0, 4) == "[####]", "an empty session is complete"
    assert fmt.clock(None) == "-"
