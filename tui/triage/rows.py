"""A results row as :func:`runtime.running.results.read_rows` gives it (every value a string), read
for the screen: flagged, out of scope, probability, and the order the table shows."""

from __future__ import annotations


def flagged(row: dict) -> bool:
    return row.get("flagged") == "1"


def out_of_scope(row: dict) -> bool:
    return row.get("scope") == "out"


def probability(row: dict) -> float:
    try:
        return float(row.get("probability") or "nan")
    except ValueError:
        return float("nan")


def order_key(row: dict) -> tuple[bool, float, str]:
    """Flagged first (out-of-scope rows are flagged: a person reads them), then by probability
    (highest first, a missing one last), then by path."""
    p = probability(row)
    return not flagged(row), -(p if p == p else -1.0), row.get("path", "")


def sort_rows(rows: list[dict]) -> list[dict]:
    """``rows`` in the table's order (:func:`order_key`)."""
    return sorted(rows, key=order_key)
