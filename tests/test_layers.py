"""The web and CLI layers call functions; SQL lives in the modules that own the tables."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = sorted([*(ROOT / "qrq" / "web").rglob("*.py"), *(ROOT / "qrq" / "cli").rglob("*.py")])
# Methods that run SQL on sqlite3, peewee or huey's storage.
SQL_CALLS = {"execute", "executemany", "executescript", "execute_sql", "sql", "raw"}
SQL_TEXT = re.compile(
    r"^\s*(select\s.+\sfrom\s|insert\s+(or\s+\w+\s+)?into\s|update\s+\S+\s+set\s|"
    r"delete\s+from\s|create\s+(table|index|view|trigger)\s|drop\s+(table|index)\s|"
    r"alter\s+table\s|pragma\s+\w+|with\s+recursive\s|begin(\s+immediate)?\s*;?$)",
    re.IGNORECASE | re.DOTALL)


def sql_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    # An f-string is checked whole, not again by its parts.
    skipped |= {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                   for part in node.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in SQL_CALLS:
            found.append(f"{path.name}:{node.lineno}: .{node.func.attr}(...)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in skipped and SQL_TEXT.match(node.value):
            found.append(f"{path.name}:{node.lineno}: SQL text {node.value[:40]!r}")
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values
                           if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if SQL_TEXT.match(text):
                found.append(f"{path.name}:{node.lineno}: SQL text {text[:40]!r}")
    return found


@pytest.mark.parametrize("path", ADAPTERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_web_and_cli_run_no_sql(path):
    assert sql_uses(path) == []


def test_the_check_finds_sql(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('def f(storage, db, n):\n'
                      '    """Select the rows from the table."""\n'
                      '    storage.sql("select 1 from job")\n'
                      '    db.execute_sql(\'select 1 from "user"\')\n'
                      '    q = f"delete from job where id = {n}"\n'
                      '    help_text = "Delete ended jobs older than an age."\n')
    assert len(sql_uses(sample)) == 5
