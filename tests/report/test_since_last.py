"""since_last: drops added/gone, and per subset the threshold and kept count before -> after."""

import math

from clip_assets.report.since_last import arrow_rows, pivot_kept_per_drop, since_last


def _row(subset, rule, threshold, kept, pool=100):
    return {"subset": subset, "rule": rule, "threshold": threshold, "k": None, "kept": kept, "pool": pool}


def test_every_kind_of_change():
    prev = [_row("a", "top 25% by x", 0.5, 25), _row("b", "y >= 1", 1.0, 40), _row("c", "every row", None, 100),
            _row("gone", "top 10% by x", 0.9, 10), _row("nan", "top 25% by z", math.nan, 0)]
    cur = [_row("a", "top 25% by x", 0.4, 52, 200), _row("b", "y >= 2", 2.0, 30, 200),
           _row("c", "every row", None, 100), _row("new", "top 5% by x", 1.2, 10, 200),
           _row("nan", "top 25% by z", math.nan, 0)]
    r = since_last(prev, cur, ["d0"], ["d0", "d1"])
    assert (r.drops_added, r.drops_removed, r.first) == (["d1"], [], False)
    by = {x["subset"]: x for x in r.rows}
    assert [x["subset"] for x in r.rows] == ["a", "b", "c", "new", "nan", "gone"]
    assert {k: v["change"] for k, v in by.items()} == {
        "a": "changed", "b": "rule changed", "c": "same", "new": "new", "nan": "same", "gone": "gone"}
    assert (by["a"]["threshold_before"], by["a"]["threshold_after"], by["a"]["kept_change"]) == (0.5, 0.4, 27)
    assert by["new"]["kept_before"] is None and by["gone"]["kept_after"] is None and by["gone"]["kept_change"] is None
    shown = {x["subset"]: x for x in arrow_rows(r)}
    assert shown["a"]["threshold"] == "0.5 -> 0.4" and shown["a"]["kept"] == "25 -> 52"
    assert shown["a"]["kept_change"] == "+27" and shown["new"]["kept"] == "- -> 10"
    assert shown["nan"]["threshold"] == "- -> -"
    assert "drops added: d1" in r.headline() and "subsets changed: a, b, new, gone" in r.headline()


def test_first_materialization_and_removed_drop():
    r = since_last(None, [_row("a", "every row", None, 5)], None, ["d0"])
    assert r.first and r.drops_added == ["d0"] and r.rows[0]["change"] == "new"
    assert "no earlier report" in r.headline()
    r2 = since_last([_row("a", "every row", None, 5)], [_row("a", "every row", None, 3)], ["d0", "d1"], ["d1"])
    assert r2.drops_removed == ["d0"] and r2.rows[0]["kept_change"] == -2 and "drops gone: d0" in r2.headline()


def test_kept_per_drop_pivot():
    rows = [{"drop": "d1", "subset": "a", "pool": 10, "kept": 3}, {"drop": "d0", "subset": "a", "pool": 8, "kept": 2},
            {"drop": "d0", "subset": "b", "pool": 8, "kept": 8}]
    assert pivot_kept_per_drop(rows, ["a", "b"]) == [
        {"drop": "d0", "pool": 8, "a": 2, "b": 8}, {"drop": "d1", "pool": 10, "a": 3, "b": None}]
