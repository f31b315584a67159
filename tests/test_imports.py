"""Zero install: only the standard library is imported, and the one-off send path stays lean."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import unittest

from tests.support import PROJECT_ROOT, cli_env

_PROBE = r"""
import importlib, json, os, sys, sysconfig
root = os.path.realpath(sys.argv[1])
import iotpost, pkgutil
for m in pkgutil.walk_packages(iotpost.__path__, "iotpost."):
    importlib.import_module(m.name)
import tests.twin_support, tests.support
stdlib = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
if os.name == "nt":  # Windows keeps the standard library's extension modules (_ssl, _sqlite3...) in DLLs\
    stdlib |= {os.path.join(p, "DLLs") for p in (sys.base_exec_prefix, sys.base_prefix)}
stdlib = {os.path.normcase(os.path.realpath(p)) for p in stdlib}
root = os.path.normcase(root)
foreign = []
for name, mod in sorted(sys.modules.items()):
    origin = getattr(mod, "__file__", None)
    if not origin:
        continue  # built-in or frozen: part of the interpreter
    path = os.path.normcase(os.path.realpath(origin))  # one spelling of a path on case-blind Windows
    if path.startswith(root + os.sep):
        continue
    if any(path.startswith(s + os.sep) and "site-packages" not in path and "dist-packages" not in path
           for s in stdlib):
        continue
    foreign.append((name, path))
print(json.dumps(foreign))
"""

_LAZY = r"""
import io, json, sys
from iotpost import tesaiot_cli
from iotpost.environment import Environment
out = io.StringIO()
code = tesaiot_cli._main(sys.argv[1:], [], Environment(stdout=out, stderr=io.StringIO()))
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

_LAZY_TLINK = _LAZY.replace("tesaiot_cli", "tlink_cli")
# shutil (with bz2, lzma, fnmatch) comes only from argparse asking the terminal's width; 3.8's argparse imports it itself
_SHUTIL = ("shutil",) if sys.version_info >= (3, 9) else ()


class ImportTests(unittest.TestCase):
    def test_everything_imports_only_the_standard_library(self):
        # -S: no site-packages on the path at all (a .pth there may import things of its own), so a
        # third-party import of ours fails outright, and anything else loaded must be stdlib or ours.
        proc = subprocess.run([sys.executable, "-S", "-c", _PROBE, str(PROJECT_ROOT)], capture_output=True, text=True,
                              cwd=str(PROJECT_ROOT), env=cli_env(), timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(json.loads(proc.stdout), [])

    def test_every_package_module_is_probed(self):
        import iotpost

        names = [m.name for m in pkgutil.walk_packages(iotpost.__path__, "iotpost.")]
        self.assertIn("iotpost.receiver.server", names)
        self.assertIn("iotpost.transport", names)

    def test_a_dry_run_does_not_load_the_receiver_sqlite_or_http_stack(self):
        proc = subprocess.run([sys.executable, "-c", _LAZY, "--dry-run"], capture_output=True, text=True,
                              cwd=str(PROJECT_ROOT), env=cli_env(), timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        result = json.loads(proc.stdout.splitlines()[-1])
        self.assertEqual(result["code"], 0)
        loaded = set(result["modules"])
        for heavy in ("sqlite3", "http.server", "http.client", "email", "iotpost.receiver", "logging", "uuid",
                      "urllib.request", "iotpost.delivery"):
            self.assertNotIn(heavy, loaded)

    def test_a_real_send_loads_no_typing_pathlib_sqlite_or_urllib_request(self):
        # what a Raspberry Pi's cron start pays for (ARCHITECTURE "Start-up cost"; bench/bench_coldsend.py)
        from tests.twin_support import make_bundle, start_test_twin, temp_dir

        twin = start_test_twin(self)
        bundle = make_bundle(temp_dir(self) / "b", twin=twin)
        proc = subprocess.run([sys.executable, "-S", "-c", _LAZY, "--certs-dir", str(bundle), "--quiet"],
                              capture_output=True, text=True, cwd=str(PROJECT_ROOT), env=cli_env(), timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        result = json.loads(proc.stdout.splitlines()[-1])
        self.assertEqual(result["code"], 0)
        self.assertEqual(twin.store.count_telemetry(), 1)  # it really sent
        loaded = set(result["modules"])
        for heavy in ("typing", "pathlib", "sqlite3", "urllib.request", "logging", "signal",
                      "uuid", "iotpost.proxy", "iotpost.spool", "iotpost.platforms.iotflow",
                      "iotpost.data_input") + _SHUTIL:
            self.assertNotIn(heavy, loaded)

    def test_a_real_tlink_push_loads_no_typing_pathlib_sqlite_or_urllib_request(self):
        # tlink_push.py's one-off send, signed with a secret file and its own --ca-file
        from tests.twin_support import CA_PEM, start_test_twin, temp_dir

        twin = start_test_twin(self, tlink_secret=b"tlink-import-probe-secret")
        secret = temp_dir(self) / "secret.txt"
        secret.write_bytes(b"tlink-import-probe-secret\n")
        args = ["--url", twin.url + "/api/webhooks/tlink", "--ca-file", str(CA_PEM), "--secret-file", str(secret),
                "--quiet"]
        proc = subprocess.run([sys.executable, "-S", "-c", _LAZY_TLINK] + args,
                              capture_output=True, text=True, cwd=str(PROJECT_ROOT), env=cli_env(), timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        result = json.loads(proc.stdout.splitlines()[-1])
        self.assertEqual(result["code"], 0)
        self.assertEqual(len([r for r in twin.requests if r.method == "POST"]), 1)  # it really sent
        loaded = set(result["modules"])
        for heavy in ("typing", "pathlib", "sqlite3", "urllib.request", "logging", "signal", "iotpost.proxy",
                      "iotpost.spool") + _SHUTIL:
            self.assertNotIn(heavy, loaded)

    def test_the_collector_is_paused_for_start_up_and_back_for_the_run(self):
        from tests.twin_support import make_bundle, start_test_twin, temp_dir

        twin = start_test_twin(self)
        bundle = make_bundle(temp_dir(self) / "b", twin=twin)
        # (3.12 starts with objects in the permanent generation: what counts is whether the run froze more)
        probe = ("import gc, runpy, sys; sys.argv = ['post_https_sample.py'] + sys.argv[1:]\n"
                 "frozen = gc.get_freeze_count()\n"
                 "try:\n    runpy.run_path('post_https_sample.py', run_name='__main__')\n"
                 "except SystemExit as exc:\n    print(exc.code, gc.isenabled(), gc.get_freeze_count() > frozen)")
        for args, after in ((["--count", "2", "--interval", "0"], "0 True True"),  # the run collects again
                            (["--dry-run"], "0 False False")):  # nothing long ran: it never needed to
            with self.subTest(args=args):
                proc = subprocess.run([sys.executable, "-c", probe, "--certs-dir", str(bundle), "--quiet"] + args,
                                      capture_output=True, text=True, cwd=str(PROJECT_ROOT), env=cli_env(), timeout=60)
                self.assertEqual(proc.stdout.strip().splitlines()[-1], after, proc.stderr)


def import_graph(package_dir) -> dict:
    """module -> the sibling modules it imports (at the top or inside a function), from the source."""
    import ast

    graph = {}
    for path in sorted(package_dir.glob("*.py")):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        graph[path.stem] = deps
    return graph


def cycles(graph: dict) -> list:
    """Pairs (a, b) where a imports b and b leads back to a."""
    def leads_to(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            here = todo.pop()
            if here == goal:
                return True
            if here not in seen:
                seen.add(here)
                todo.extend(graph.get(here, ()))
        return False

    return sorted((a, b) for a in graph for b in graph[a] if b != a and leads_to(b, a))


class LayeringTests(unittest.TestCase):
    def test_the_twin_modules_import_in_one_direction(self):
        # a platform module, the handler or a storage module importing its importer back makes the
        # twin a knot where adding a platform touches everything (issue 10)
        graph = import_graph(PROJECT_ROOT / "iotpost" / "receiver")
        self.assertEqual(cycles(graph), [])

    def test_the_cycle_check_sees_a_cycle(self):
        self.assertEqual(cycles({"store": {"tlink_store"}, "tlink_store": {"store"}, "clock": set()}),
                         [("store", "tlink_store"), ("tlink_store", "store")])


class SourceTests(unittest.TestCase):
    def test_every_source_compiles_without_warnings(self):
        # An invalid escape in a docstring is a SyntaxWarning on 3.12+ that lands on users' stderr.
        import warnings

        files = sorted(PROJECT_ROOT.glob("*.py")) + sorted(PROJECT_ROOT.glob("iotpost/**/*.py")) + \
            sorted(PROJECT_ROOT.glob("tests/*.py")) + sorted(PROJECT_ROOT.glob("bench/*.py"))
        self.assertGreater(len(files), 30)
        for path in files:
            with self.subTest(path=path.name), warnings.catch_warnings():
                warnings.simplefilter("error")
                compile(path.read_text(encoding="utf-8"), str(path), "exec")


if __name__ == "__main__":
    unittest.main()
