"""docs/paper-map.md names a function and a test for each equation: every one of them exists."""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "paper-map.md"


def _rows():
    rows = []
    for line in MAP.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))] if line.startswith("|") else []
        if len(cells) >= 4 and cells[0] not in ("The paper", "---") and not set(cells[0]) <= {"-"}:
            rows.append(cells)
    return rows


def _code_names(cell):
    """`module.name` and `module.Class.method` references of the Where column."""
    return [n for n in re.findall(r"`([A-Za-z_][\w.]*)`", cell) if "." in n]


def _resolve(dotted):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("minivae." + ".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def _test_functions(path):
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")}


def test_the_map_has_rows_and_every_row_names_code_and_a_test():
    rows = _rows()
    assert len(rows) >= 20
    for row in rows:
        assert _code_names(row[1]), row[0]
        assert re.findall(r"tests/\w+\.py::\w+", row[3]), row[0]


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r[0][:40])
def test_every_named_function_and_test_exists(row):
    for name in _code_names(row[1]):
        assert callable(_resolve(name)) or isinstance(_resolve(name), type), name
    for ref in re.findall(r"tests/\w+\.py::\w+", row[3]):
        file, func = ref.split("::")
        assert func in _test_functions(ROOT / file), ref


def test_the_checker_fails_on_a_name_that_does_not_exist():
    with pytest.raises((ImportError, AttributeError)):
        _resolve("estimator.no_such_function")
    assert "test_no_such_test" not in _test_functions(ROOT / "tests" / "test_estimator.py")
