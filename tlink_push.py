#!/usr/bin/env python3
"""Send TLINK push-protocol payloads to a webhook over verified HTTPS. Run with --help for the flags."""

import sys

from iotpost.tlink_cli import main

if __name__ == "__main__":
    sys.exit(main())
