"""Running the real entry points as subprocesses, the way a user or cron would.

Usage: ``proc = run_cli("post_https_sample.py", "--certs-dir", bundle, "--count", "2")``
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SENDER = PROJECT_ROOT / "post_https_sample.py"
TLINK = PROJECT_ROOT / "tlink_push.py"
RECEIVER = PROJECT_ROOT / "receiver.py"


# A developer's own proxy settings would send the tests' loopback traffic to their proxy.
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def cli_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment minus anything of ours, or any proxy, a developer may have set in their shell."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TESAIOT_", "IOTPOST_", "TLINK_")) and k != "PYTHONPATH"
           and k.lower() not in PROXY_VARS}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    if extra:
        env.update(extra)
    return env


def run_cli(script: Path, *args: object, stdin: Optional[str] = None, env: Optional[Dict[str, str]] = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run an entry script with this interpreter (not the pyenv shim) and capture its output."""
    # Never inherit the runner's stdin: CI has none, and a developer's terminal must not be read.
    extra = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    proc = subprocess.run(
        [sys.executable, str(script)] + [str(a) for a in args],
        **extra,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=cli_env(env),
        timeout=timeout,
        cwd=str(PROJECT_ROOT),
    )
    assert_no_suite_secret(proc.stdout + proc.stderr, "the output of %s %s" % (script.name, " ".join(map(str, args))))
    return proc


def start_cli(script: Path, *args: object, env: Optional[Dict[str, str]] = None, **kwargs) -> subprocess.Popen:
    """Start an entry script in the background (for streaming stdin, signals, SIGKILL tests)."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(
        [sys.executable, str(script)] + [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=cli_env(env),
        cwd=str(PROJECT_ROOT),
        **kwargs,
    )


def clear_proxy_env(testcase) -> None:
    """For in-process runs: hide a developer's proxy variables from os.environ until cleanup."""
    from unittest import mock

    patcher = mock.patch.dict(os.environ, {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS},
                              clear=True)
    patcher.start()
    testcase.addCleanup(patcher.stop)



def suite_secrets() -> Tuple[str, ...]:
    """Every credential the suite hands the tools (keys, HMAC secrets, a proxy password and its Basic token).

    Imported lazily: the modules that define them import this one.
    """
    import base64

    from tests import test_e2e_sender, test_e2e_thermacore, test_e2e_tlink, test_proxy, twin_support

    sample = (PROJECT_ROOT / "certs_credentials" / "api_key.txt").read_text(encoding="utf-8").strip()
    key_password = (PROJECT_ROOT / "tests" / "certdata" / "client-key-password.txt").read_text(encoding="utf-8").strip()
    return (twin_support.TEST_API_KEY, twin_support.OTHER_API_KEY, test_e2e_sender.KEY, sample,
            test_e2e_tlink.SECRET.decode("ascii"), test_proxy.PASSWORD, test_proxy.TOKEN,
            base64.b64encode(test_proxy.PASSWORD.encode()).decode("ascii"), key_password,
            test_e2e_thermacore.PASSWORD)


def assert_no_suite_secret(text: str, where: str) -> None:
    """No secret of the suite in what a tool printed or wrote: checked on every run_cli and every test folder."""
    for secret in suite_secrets():
        if secret and secret in text:
            raise AssertionError("a secret of the test suite (%s...) appears in %s" % (secret[:4], where))


def assert_no_secret_in_files(folder: Path) -> None:
    """Spools, moved-aside copies, dead letters and logs under ``folder`` hold no secret of the suite.

    Files that are credentials themselves (their whole content is one secret) and PEM files are skipped.
    """
    secrets = suite_secrets()
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.suffix in (".pem", ".key"):
            continue
        data = path.read_bytes()
        if data.strip().decode("utf-8", "replace") in secrets:
            continue
        for secret in secrets:
            if secret and secret.encode("utf-8") in data:
                raise AssertionError("a secret of the test suite (%s...) is stored in %s" % (secret[:4], path))
