#!/usr/bin/env python3
"""Send telemetry to the TESAIoT platform over verified HTTPS. Run with --help for the flags."""

import sys

from iotpost.tesaiot_cli import main

if __name__ == "__main__":
    sys.exit(main())
