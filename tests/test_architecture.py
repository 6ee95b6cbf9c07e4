"""The house rules that a reader cannot see in one file: modules stay about 400 lines at
most, and an import inside a function is there for a stated reason, never to hide a cycle
(restructure so the arrows point one way instead; see docs/architecture.md)."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted((ROOT / "qrq").rglob("*.py"))
MAX_LINES = 400

# Modules allowed past MAX_LINES for now, each with why. Keep this list short and say
# when the entry goes away.
LONG_MODULES: dict[str, str] = {}  # module -> why it may be longer (none today)

# Imports inside a function: (module path, imported name) -> why it is not at the top.
# Starting cost is a reason; hiding an import cycle is not.
DEFERRED_IMPORTS = {
    # Flask's application-factory pattern: importing one web module (qrq.web.errors,
    # qrq.web.params) does not import every blueprint and the queue.
    ("qrq/web/__init__.py", "qrq.queue.huey"): "app factory",
    ("qrq/web/__init__.py", "qrq.queue.jobs"): "app factory",
    **{("qrq/web/__init__.py", f"qrq.web.{name}"): "app factory"
       for name in ("admin_api", "analytics", "api", "backups_api", "batch", "dashboard",
                    "errors", "events", "home", "openapi", "ops", "params", "waiting",
                    "webhooks")},
    # A guard from before qrq.backup existed (it returns None on ImportError); the import
    # itself can move to the top (qrq.backup imports nothing of the web layer).
    ("qrq/web/dashboard/pages.py", "qrq.backup"): "stale guard, owned by the dashboard work",
    # boto3 is optional (the s3 extra) and a third of a second to import: only a process
    # whose artifact store is in S3 loads it.
    ("qrq/artifacts/__init__.py", "qrq.artifacts.s3.S3Store"): "optional, slow dependency",
    # numpy is 0.1 s and ~20 MB to import, and only a report's counting needs it.
    ("qrq/analytics/shares.py", "numpy"): "slow dependency, a report's only",
    ("qrq/analytics/shard.py", "numpy"): "slow dependency, a report's only",
    ("qrq/analytics/btree.py", "numpy"): "slow dependency, a report's only",
}


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def deferred_imports(path: Path) -> list[tuple[str, int]]:
    """Every name imported inside a function (or method) of *path*, with its line."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                found += [(alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return sorted(set(found), key=lambda item: item[1])


@pytest.mark.parametrize("path", MODULES, ids=relative)
def test_module_is_at_most_400_lines(path):
    lines = len(path.read_text().splitlines())
    if relative(path) in LONG_MODULES:
        pytest.skip(LONG_MODULES[relative(path)])
    assert lines <= MAX_LINES, f"{relative(path)} has {lines} lines: split it by concept"


def test_no_unexplained_import_inside_a_function():
    unexplained = [f"{relative(path)}:{line}: {name}"
                   for path in MODULES for name, line in deferred_imports(path)
                   if (relative(path), name) not in DEFERRED_IMPORTS]
    assert unexplained == [], ("move these imports to the top of the module, restructuring "
                               "if they hid a cycle, or list them with a reason")


def test_the_import_check_finds_nested_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n"
                      "def f():\n"
                      "    from qrq import backup\n"
                      "    class C:\n"
                      "        def g(self):\n"
                      "            import json\n"
                      "async def h():\n"
                      "    from .sibling import thing\n")
    assert deferred_imports(sample) == [("qrq.backup", 3), ("json", 6), (".sibling.thing", 8)]


def test_the_web_app_and_the_consumer_load_no_slow_optional_module(tmp_path):
    """What the deferred imports above are for: importing the web app and every task
    (as `qrq serve` and `huey_consumer huey_app.huey` do) loads neither numpy nor boto3."""
    code = ("import sys, web, huey_app; "
            "print(' '.join(m for m in ('numpy', 'boto3') if m in sys.modules))")
    env = {**os.environ, "QRQ_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []
