#!/usr/bin/env python3
"""Send TLINK push-protocol payloads to a webhook over verified HTTPS. Run with --help for the flags."""

import sys

from iotpost.startup import pause_gc

pause_gc()  # until the run itself begins: start-up makes little garbage (iotpost/startup.py)
from iotpost.tlink_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
