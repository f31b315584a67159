"""``iotpost doctor``: name the layer that fails between this device and its platform, one line per check.

Usage: ``iotpost doctor --certs-dir DIR [--platform P] [--json]`` (``post_https_sample.py --check`` is the same)

Exits with the first failing check's code (66 missing file, 75 DNS/TCP/proxy down, 77 key refused,
78 bundle, TLS or a clock more than a minute off), 0 when nothing failed; warnings (a certificate
expiring within 30 days) do not fail. Nothing is stored on the platform.
"""

from __future__ import annotations

from typing import List, Optional

from .doctor import CheckResult, DoctorSettings, exit_code, run_checks
from .environment import Environment
from .output import Reporter

PROG = "iotpost doctor"


def build_parser(prog: str = PROG):
    from .argparser import ArgumentParser
    from .bundle import CERTS_DIR_ENV
    from .platforms import SENDING
    from .user_paths import user_path

    p = ArgumentParser(prog=prog, description="Check each layer between this device and its platform: the "
                       "bundle, DNS, TCP, proxy, TLS and certificate expiry, the clock, the key (nothing stored).",
                       epilog="exits with the first failing check's code: 66 missing credential file, 75 DNS, "
                       "TCP or proxy down, 77 key refused, 78 bundle, TLS, or clock more than 60 s off.")
    p.add_argument("--certs-dir", type=user_path, default=None, metavar="DIR",
                   help="credential bundle folder (default: $%s, else ./certs_credentials)" % CERTS_DIR_ENV)
    p.add_argument("--platform", choices=SENDING, default=None,
                   help="default: the bundle's endpoints.json \"platform\", else tesaiot")
    p.add_argument("--base-url", default=None, metavar="URL", help="override the bundle's base URL")
    p.add_argument("--ca-file", type=user_path, default=None, metavar="PEM", help="override the bundle's CA")
    p.add_argument("--proxy", default=None, metavar="URL", help="HTTP proxy (default: $HTTPS_PROXY, as curl)")
    p.add_argument("--noproxy", default=None, metavar="LIST", help="hosts reached directly (default: $NO_PROXY)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per step (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per check, then a summary")
    p.add_argument("--timestamps", action="store_true", help="prefix each line with the local time")
    p.add_argument("--debug", action="store_true", help="show a traceback for internal errors")
    return p


def report(results, reporter: Reporter) -> int:
    """Print each result as it comes (one line, a hint line under a failure), then the summary; the exit code."""
    seen: List[CheckResult] = []
    for r in results:
        seen.append(r)
        if reporter.mode == "json":
            record = {"check": r.name, "status": r.status, "detail": r.detail}
            if r.status == "fail":
                record["exit_code"] = r.exit_code
            if r.hint:
                record["hint"] = r.hint
            reporter.json_line(record)
            continue
        reporter.info("%-12s %-12s %s" % (r.name, r.status, r.detail))
        if r.hint and r.status in ("fail", "warn"):
            reporter.info("%-12s %-12s hint: %s" % ("", "", r.hint))
    code = exit_code(seen)
    failed = next((r.name for r in seen if r.status == "fail"), None)
    if reporter.mode == "json":
        reporter.json_line({"event": "doctor", "exit_code": code, "first_failure": failed})
    else:
        reporter.info("%s: %s" % (reporter.prog, "the %s check failed (exit %d)" % (failed, code) if failed
                                  else "no check failed"))
    return code


def doctor(settings: DoctorSettings, reporter: Reporter, secrets: List[str], env: Environment) -> int:
    return report(run_checks(settings, secrets, wall=env.wall), reporter)


def _main(argv: List[str], secrets: List[str], env: Optional[Environment] = None, prog: str = PROG) -> int:
    from pathlib import Path

    from .bundle import default_certs_dir
    from .console import protect_std_streams

    protect_std_streams()
    ns = build_parser(prog).parse_args(argv)
    env = env or Environment()
    script_dir = Path(__file__).resolve().parent.parent
    settings = DoctorSettings(
        certs_dir=ns.certs_dir if ns.certs_dir is not None else Path(default_certs_dir(script_dir)),
        platform=ns.platform, base_url=ns.base_url, ca_file=ns.ca_file, proxy=ns.proxy, noproxy=ns.noproxy,
        timeout=ns.timeout)
    reporter = Reporter(prog, env.stdout, env.stderr, mode="json" if ns.json else "text", secrets=secrets,
                        timestamps=ns.timestamps, clock=env.wall)
    return doctor(settings, reporter, secrets, env)


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    from .cli_run import run

    return run(lambda args, secrets: _main(args, secrets, prog=prog), argv, prog)
