#!/usr/bin/env python3
"""Cold start of dist/iotpost.pyz against the clone's script, in instructions (valgrind callgrind).

Usage: python3 bench/bench_pyz.py [--other-python PATH]

A zip cannot cache bytecode: each start of a source-only .pyz compiles every module it imports.
This counts the instructions of one run of each contender (deterministic, unlike wall time on a
shared machine) and prints them side by side with the ratio to the script:

  script            python -S iotpost.py send ... (pyc warm in __pycache__)
  pyz-precompiled   python -S iotpost.pyz send ... (bytecode for this Python inside)
  pyz-source-only   python -S iotpost.pyz send ... (sources only)
  pyz-other-python  a .pyz precompiled by --other-python (its bytecode is skipped here: magic differs)

Two runs each: a --dry-run (bundle, TLS context, one payload; nothing sent) and a real send to a
twin on 127.0.0.1 over verified TLS. Needs valgrind on PATH; run with a real interpreter, not the
pyenv shim.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iotpost import build  # noqa: E402  (after the path is set)

CERTDATA = ROOT / "tests" / "certdata"
DEVICE = "0b6c8f3e-5d2a-4e1b-9c7d-3f4a5b6c7d8e"
KEY = "tesa_ak_BENCH_0123456789abcdef"


def instructions(cmd) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    found = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if proc.returncode != 0:  # a count of a run that failed early would flatter it
        raise SystemExit("%s exited %d:\n%s" % (cmd, proc.returncode, proc.stderr[-2000:]))
    if not found:
        raise SystemExit("valgrind gave no count for %s:\n%s" % (cmd, proc.stderr[-2000:]))
    return int(found.group(1))


def make_bundle(folder: Path, url: str) -> Path:
    from bench_burst import make_bundle as make  # bench/ is this script's own folder on sys.path

    return make(folder, url, DEVICE, KEY)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--other-python", help="a second interpreter to precompile a .pyz with")
    ns = p.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: nothing measured")
        return 1
    from iotpost.receiver.server import start_twin

    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="bench-pyz-"))
    twin = start_twin(devices={DEVICE: KEY}, certfile=CERTDATA / "localhost.pem",
                      keyfile=CERTDATA / "localhost.key", db_path=":memory:", host="127.0.0.1", port=0)
    try:
        bundle = make_bundle(tmp / "bundle", twin.url)
        archives = {"pyz-precompiled": build.build(tmp / "pre.pyz"),
                    "pyz-source-only": build.build(tmp / "src.pyz", precompile=False)}
        if ns.other_python:
            other = tmp / "other.pyz"
            subprocess.run([ns.other_python, "-m", "iotpost.build", "-o", str(other)], check=True, cwd=str(ROOT),
                           stdout=subprocess.DEVNULL)
            archives["pyz-other-python"] = other
        runs = {"dry-run": ["send", "--certs-dir", str(bundle), "--dry-run", "--quiet"],
                "send": ["send", "--certs-dir", str(bundle), "--quiet"]}
        script = str(ROOT / "iotpost.py")
        for args in runs.values():  # warm __pycache__: the script's every module has its .pyc
            subprocess.run([py, "-S", script] + args, check=True, stdout=subprocess.DEVNULL, cwd=str(ROOT),
                           env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
        contenders = {"script": [py, "-S", script]}
        contenders.update({name: [py, "-S", str(path)] for name, path in archives.items()})
        counts = {name: {run: instructions(cmd + args) for run, args in runs.items()}
                  for name, cmd in contenders.items()}
    finally:
        twin.stop()
        shutil.rmtree(str(tmp), ignore_errors=True)
    print("python %s, instructions (callgrind), ratio to the script" % sys.version.split()[0])
    print("%-18s %16s %7s %16s %7s" % ("contender", "dry-run", "ratio", "send", "ratio"))
    base = counts["script"]
    for name, row in counts.items():
        print("%-18s %16d %6.2fx %16d %6.2fx" % (name, row["dry-run"], row["dry-run"] / base["dry-run"],
                                                   row["send"], row["send"] / base["send"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
