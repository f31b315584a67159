"""Build ``dist/iotpost.pyz``: the whole suite as one file to copy to a device (a maintainer's tool).

Usage: ``python3 -m iotpost.build [--output dist/iotpost.pyz] [--source-only]``

The archive holds every module of the package (found by walking the folder, so a new module ships
without editing this file), each as source and as bytecode for the building Python, and a
``__main__`` that runs ``iotpost.cli_main.main``. zipimport uses the bytecode when its magic number
matches the running Python and compiles the source otherwise, so one file runs on 3.8 to 3.13;
bench/README.md has what each costs. It carries no tests, benchmarks or sample bundle; the twin's
demo certificate ships under a test-only name (``receiver/demo_cert.py`` unpacks it when needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import marshal
import sys
import time
import zipfile
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
DEFAULT_OUTPUT = PROJECT_ROOT / "dist" / "iotpost.pyz"
# Maintainer tools that a device never runs.
LEFT_OUT = {"build.py"}
# The twin's certificate for localhost, signed by the test CA: ssl opens files by path only.
DEMO_CERT_SOURCES = (PROJECT_ROOT / "tests" / "certdata" / "localhost.pem",
                     PROJECT_ROOT / "tests" / "certdata" / "localhost.key")
DEMO_CERT_FOLDER = "iotpost/receiver/test_only_certdata"

MAIN = b'''"""python3 iotpost.pyz COMMAND: the iotpost suite in one file (see --help)."""
import sys

from iotpost.cli_main import main

sys.exit(main())
'''
SHEBANG = "/usr/bin/env python3"


def package_modules(package_dir: Path = PACKAGE_DIR) -> Iterator[Tuple[str, Path]]:
    """(name in the archive, file) for every module of the package and its subpackages, sorted."""
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if "__pycache__" in relative.parts or str(relative) in LEFT_OUT:
            continue
        # Only folders that are packages (a stray scratch folder is not shipped).
        if not all((package_dir.joinpath(*relative.parts[:i]) / "__init__.py").is_file()
                   for i in range(1, len(relative.parts))):
            continue
        yield "iotpost/" + relative.as_posix(), path


def _bytecode(source: bytes, name: str) -> bytes:
    """An unchecked hash-based .pyc: zipimport loads it without comparing zip timestamps."""
    code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    flags = 0b01  # hash-based, source not checked
    source_hash = importlib.util.source_hash(source)
    return importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little") + source_hash + marshal.dumps(code)


def _add(archive: zipfile.ZipFile, name: str, data: bytes, mode: int = 0o644) -> None:
    # A fixed date makes the archive a function of its sources alone (reproducible builds).
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100000 | mode) << 16
    archive.writestr(info, data)


def build(output: Path = DEFAULT_OUTPUT, *, precompile: bool = True) -> Path:
    """Write the archive to ``output`` (its folder is made) and return the path."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _add(archive, "__main__.py", MAIN)
        if precompile:
            _add(archive, "__main__.pyc", _bytecode(MAIN, "__main__.py"))
        for name, path in package_modules():
            source = path.read_bytes()
            _add(archive, name, source)
            if precompile:
                # zipimport looks for module.pyc beside module.py (no __pycache__ in a zip).
                _add(archive, name + "c", _bytecode(source, name))
        for path in DEMO_CERT_SOURCES:
            _add(archive, "%s/%s" % (DEMO_CERT_FOLDER, path.name), path.read_bytes())
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with open(str(partial), "wb") as out:
        out.write(b"#!" + SHEBANG.encode("ascii") + b"\n")
        out.write(buffer.getvalue())
    partial.chmod(0o755)
    partial.replace(output)  # a half-written archive never takes the place of a good one
    return output


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m iotpost.build", description=__doc__.splitlines()[0])
    parser.add_argument("--output", "-o", type=Path, default=DEFAULT_OUTPUT, help="default: dist/iotpost.pyz")
    parser.add_argument("--source-only", action="store_true",
                        help="leave out the bytecode (every start compiles every module it imports)")
    ns = parser.parse_args(argv)
    started = time.perf_counter()
    out = build(ns.output, precompile=not ns.source_only)
    sys.stdout.write("wrote %s (%d bytes, bytecode for Python %d.%d%s) in %.1f s\n" % (
        out, out.stat().st_size, sys.version_info[0], sys.version_info[1],
        " left out" if ns.source_only else "", time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
