"""The twin's demo certificate for localhost (test-only, signed by tests/certdata/ca.pem), as files.

Usage: ``certfile, keyfile = demo_cert_pair()``

``ssl`` loads a certificate by path only. In a clone the files are tests/certdata/localhost.*; in
``iotpost.pyz`` they are members of the zip (``iotpost/receiver/test_only_certdata/``), so they are
copied to a private temporary folder (0700, files 0600) removed when the process exits. The key is
public test material: it proves nothing and must never serve anything but a local twin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

NAMES = ("localhost.pem", "localhost.key")
CLONE_FOLDER = Path(__file__).resolve().parents[2] / "tests" / "certdata"
PACKED_FOLDER = Path(__file__).resolve().parent / "test_only_certdata"


def demo_cert_pair() -> Tuple[Path, Path]:
    """(certificate, key): the clone's files, else the archive's unpacked; the clone's paths when neither."""
    clone = tuple(CLONE_FOLDER / name for name in NAMES)
    if all(path.is_file() for path in clone):
        return clone[0], clone[1]
    loader = globals().get("__loader__")
    get_data = getattr(loader, "get_data", None)
    if get_data is None or not hasattr(loader, "archive"):  # not inside a zip: nothing to unpack
        return clone[0], clone[1]
    try:
        blobs = [get_data(str(PACKED_FOLDER / name)) for name in NAMES]
    except OSError:
        return clone[0], clone[1]  # an archive built without it: the receiver names the missing file
    return _unpack(blobs)


def _unpack(blobs) -> Tuple[Path, Path]:
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="iotpost-twin-cert-"))  # mkdtemp: 0700, this user only
    atexit.register(shutil.rmtree, str(folder), True)
    paths = []
    for name, data in zip(NAMES, blobs):
        path = folder / name
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        paths.append(path)
    return paths[0], paths[1]
