"""A send's cold path spells its str paths exactly as str(Path(...)) did, so every message names a file as before."""

from __future__ import annotations

import os
import unittest
from pathlib import Path
from unittest import mock

from iotpost.user_paths import path_join, path_text, user_path, user_path_text

# as users type them: trailing, repeated and leading slashes, ".", "..", a bare name, the empty string
SPELLINGS = ("B", "B/", "B//", "./B", "./B/.", "a//b/./c/", "a/../b", "..", ".", "./", "", "/", "//", "///",
             "//srv/x", "///srv//x/", "/etc/b/", "~", "~/b", "~nosuchuser/b", "a b/c d", "/tmp/.hidden/")


class PathTextTests(unittest.TestCase):
    def test_path_text_is_str_of_path(self):
        for text in SPELLINGS:
            with self.subTest(text=text):
                self.assertEqual(path_text(text), str(Path(text)))
                self.assertEqual(path_text(Path(text)), str(Path(text)))  # os.PathLike taken too

    def test_user_path_text_is_str_of_user_path(self):
        with mock.patch.dict(os.environ, {"HOME": "/home/pi/", "USERPROFILE": "/home/pi/"}):
            for text in SPELLINGS:
                with self.subTest(text=text):
                    self.assertEqual(user_path_text(text), str(user_path(text)))
            self.assertEqual(user_path_text("~/b/"), str(Path("/home/pi/b")))

    def test_path_join_is_str_of_path_slash_name(self):
        for text in SPELLINGS:
            with self.subTest(text=text):
                self.assertEqual(path_join(path_text(text), "ca-chain.pem"), str(Path(text) / "ca-chain.pem"))


if __name__ == "__main__":
    unittest.main()
