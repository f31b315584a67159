"""pip install . into a throwaway venv, without network, then the installed `iotpost` command end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from tests.support import PROJECT_ROOT, cli_env
from tests.twin_support import make_bundle, start_test_twin, temp_dir

DEVICE = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
KEY = "tesa_ak_pip_" + "p" * 24


def backend_problem() -> str:
    """Why this Python cannot build our wheel offline (--no-build-isolation uses its setuptools), or ''."""
    import importlib.util
    from importlib import metadata  # asks the installed distribution: the suite itself imports no setuptools

    try:
        found = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        return "setuptools is not installed (pip cannot fetch it without network)"
    version = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    if version < (61,):
        return "setuptools %s reads no [project] table (61 or later needed)" % found
    if version < (70, 1) and importlib.util.find_spec("wheel") is None:
        return "setuptools %s needs the wheel package to build a wheel" % found
    if importlib.util.find_spec("pip") is None:
        return "pip is not installed"
    return ""


@unittest.skipIf(backend_problem(), "cannot build offline with %s: %s" % (sys.executable, backend_problem()))
class PipInstallTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.root = Path(tempfile.mkdtemp(prefix="iotpost-pip-"))
        # A copy of what a source distribution holds, so the build leaves nothing in the clone.
        source = cls.root / "src"
        source.mkdir()
        shutil.copytree(str(PROJECT_ROOT / "iotpost"), str(source / "iotpost"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copyfile(str(PROJECT_ROOT / name), str(source / name))
        # pip install . is "build a wheel, install it": built here with this Python's backend, installed
        # into a fresh venv that sees this Python's pip (--system-site-packages), so nothing is downloaded.
        wheels = cls.root / "wheels"
        cls.pip(sys.executable, "wheel", "--no-build-isolation", "--no-index", "--no-deps", "-w", str(wheels),
                str(source))
        venv = cls.root / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                       check=True, capture_output=True)
        bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
        cls.python = bin_dir / ("python.exe" if os.name == "nt" else "python")
        cls.command = bin_dir / ("iotpost.exe" if os.name == "nt" else "iotpost")
        cls.pip(str(cls.python), "install", "--no-index", "--no-deps", *map(str, wheels.glob("iotpost-*.whl")))

    @classmethod
    def pip(cls, python: str, *args: str) -> None:
        proc = subprocess.run([python, "-m", "pip"] + list(args) + ["--disable-pip-version-check", "-q"],
                              cwd=str(cls.root), capture_output=True, text=True, env=cli_env())
        if proc.returncode != 0:
            shutil.rmtree(str(cls.root), ignore_errors=True)
            raise AssertionError("pip %s failed:\n%s%s" % (args[0], proc.stdout, proc.stderr))

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(str(cls.root), ignore_errors=True)

    def run_installed(self, *args: str, cwd: Path):
        return subprocess.run([str(self.command)] + list(args), cwd=str(cwd), capture_output=True, text=True,
                              env=cli_env(), stdin=subprocess.DEVNULL, timeout=60)

    def test_version_comes_from_the_package(self):
        from iotpost import __version__

        proc = self.run_installed("--version", cwd=self.root)
        self.assertEqual((proc.returncode, proc.stdout), (0, "iotpost %s\n" % __version__))

    def test_installed_package_is_the_venvs_and_carries_no_tests(self):
        proc = subprocess.run([str(self.python), "-c", "import iotpost, os; print(os.path.dirname(iotpost.__file__))"],
                              cwd=str(self.root), capture_output=True, text=True, env=cli_env())
        installed = Path(proc.stdout.strip())
        self.assertTrue(str(installed).startswith(str(self.root / "venv")), installed)
        site = installed.parent
        self.assertFalse((site / "tests").exists())
        self.assertFalse((site / "bench").exists())
        self.assertTrue((installed / "platforms" / "tesaiot.py").is_file())

    def test_installed_command_sends_to_the_twin_with_the_bundle_in_the_current_folder(self):
        twin = start_test_twin(self)
        twin.register_device(DEVICE, KEY)
        work = temp_dir(self)
        make_bundle(work / "certs_credentials", url=twin.url, device_id=DEVICE, api_key=KEY)
        proc = self.run_installed("send", cwd=work)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)
        self.assertNotIn(KEY, proc.stdout + proc.stderr)


if __name__ == "__main__":
    unittest.main()
