"""Credential bundle loading: every problem names its file and carries the right exit code."""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from pathlib import Path
from typing import Dict, Optional

from iotpost import bundle as bundle_mod
from iotpost.bundle import (
    API_KEY_FILE,
    CA_FILE,
    CERTS_DIR_ENV,
    DEVICE_ID_FILE,
    ENDPOINTS_FILE,
    Bundle,
    default_certs_dir,
    load_bundle,
)
from iotpost.errors import ConfigError, CredentialMissing, IotPostError
from iotpost.exitcodes import ExitStatus

DEVICE_ID = "05F8968A-B400-4727-9678-B53CB0889FCE"
API_KEY = "tk_test_5e1f9c0a7b3d4e2f8a6c1b9d0e7f3a2c"
CA_TEXT = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
ENDPOINTS = '{"ingest_base_url": "https://ingest.example.test", "api_base_url": "https://api.example.test"}'


class BundleTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="iotpost-bundle-"))
        self.addCleanup(shutil.rmtree, str(self.tmp), True)
        self.dir = self.tmp / "certs_credentials"
        self.dir.mkdir()

    def write_bundle(self, changes: Optional[Dict[str, Optional[str]]] = None) -> Path:
        """Write a good bundle, with some files replaced (text) or left out (None)."""
        files: Dict[str, Optional[str]] = {
            DEVICE_ID_FILE: DEVICE_ID + "\n",
            API_KEY_FILE: API_KEY + "\n",
            CA_FILE: CA_TEXT,
            ENDPOINTS_FILE: ENDPOINTS,
        }
        files.update(changes or {})
        for name, text in files.items():
            if text is not None:
                path = self.dir / name
                path.write_text(text, encoding="utf-8")
                if name == API_KEY_FILE:
                    os.chmod(str(path), 0o600)
        return self.dir

    def assertConfigError(self, name: str) -> ConfigError:
        with self.assertRaises(ConfigError) as cm:
            load_bundle(self.dir)
        exc = cm.exception
        self.assertEqual(exc.exit_code, ExitStatus.CONFIG)
        self.assertEqual(int(exc.exit_code), 78)
        self.assertIn(name, str(exc))
        self.assertNoKey(str(exc))
        self.assertNoKey(exc.hint or "")
        return exc

    def assertNoKey(self, text: str) -> None:
        self.assertNotIn(API_KEY, text)


class LoadValidBundleTest(BundleTestCase):
    def test_valid_bundle(self) -> None:
        self.write_bundle()
        b = load_bundle(self.dir)
        self.assertIsInstance(b, Bundle)
        self.assertEqual(b.device_id, DEVICE_ID.lower())
        self.assertEqual(b.api_key, API_KEY)  # trailing newline stripped
        self.assertEqual(b.ca_file, str(self.dir / CA_FILE))  # a str, spelled as str(Path)
        self.assertEqual(b.base_url, "https://ingest.example.test")
        self.assertEqual(b.certs_dir, str(self.dir))
        self.assertEqual(b.warnings, ())

    def test_accepts_str_path_and_bom(self) -> None:
        self.write_bundle()
        (self.dir / DEVICE_ID_FILE).write_bytes(b"\xef\xbb\xbf  " + DEVICE_ID.encode() + b"\r\n")
        b = load_bundle(str(self.dir))  # type: ignore[arg-type]
        self.assertEqual(b.device_id, DEVICE_ID.lower())

    def test_bundle_is_frozen(self) -> None:
        self.write_bundle()
        b = load_bundle(self.dir)
        with self.assertRaises(AttributeError):
            b.api_key = "other"  # type: ignore[misc]


class MissingFileTest(BundleTestCase):
    def test_each_missing_file_is_noinput_naming_the_file(self) -> None:
        for name in (DEVICE_ID_FILE, API_KEY_FILE, CA_FILE, ENDPOINTS_FILE):
            with self.subTest(missing=name):
                shutil.rmtree(str(self.dir))
                self.dir.mkdir()
                self.write_bundle()
                (self.dir / name).unlink()
                with self.assertRaises(CredentialMissing) as cm:
                    load_bundle(self.dir)
                self.assertEqual(cm.exception.exit_code, ExitStatus.NOINPUT)
                self.assertEqual(int(cm.exception.exit_code), 66)
                self.assertIn(name, str(cm.exception))
                self.assertTrue(cm.exception.hint)
                self.assertNoKey(str(cm.exception))

    def test_missing_folder(self) -> None:
        with self.assertRaises(CredentialMissing) as cm:
            load_bundle(self.tmp / "nowhere")
        self.assertIn("nowhere", str(cm.exception))
        self.assertIn(CERTS_DIR_ENV, cm.exception.hint or "")

    def test_unreadable_file_is_noinput(self) -> None:
        self.write_bundle()
        # A directory where a file should be: reading it fails with an OSError on every platform.
        (self.dir / CA_FILE).unlink()
        (self.dir / CA_FILE).mkdir()
        with self.assertRaises(CredentialMissing) as cm:
            load_bundle(self.dir)
        self.assertIn(CA_FILE, str(cm.exception))


class MalformedFileTest(BundleTestCase):
    def test_bad_uuid(self) -> None:
        for text in ("not-a-uuid", "05f8968a-b400-4727-9678-b53cb0889fc", "05f8968ab40047279678b53cb0889fce",
                     DEVICE_ID + " extra", ""):
            with self.subTest(text=text):
                self.write_bundle({DEVICE_ID_FILE: text})
                self.assertConfigError(DEVICE_ID_FILE)

    def test_empty_key(self) -> None:
        for text in ("", "  \n", "\n\n"):
            with self.subTest(text=text):
                self.write_bundle({API_KEY_FILE: text})
                self.assertConfigError(API_KEY_FILE)

    def test_multi_token_key(self) -> None:
        for text in (API_KEY + " " + API_KEY, API_KEY + "\n" + API_KEY + "\n", API_KEY + "\tx"):
            with self.subTest(text=text):
                self.write_bundle({API_KEY_FILE: text})
                self.assertConfigError(API_KEY_FILE)

    def test_invalid_json(self) -> None:
        self.write_bundle({ENDPOINTS_FILE: '{"ingest_base_url": '})
        self.assertConfigError(ENDPOINTS_FILE)

    def test_non_object_json(self) -> None:
        for text in ('["https://x.test"]', '"https://x.test"', "null", "3"):
            with self.subTest(text=text):
                self.write_bundle({ENDPOINTS_FILE: text})
                self.assertConfigError(ENDPOINTS_FILE)

    def test_non_string_url(self) -> None:
        for text in ('{"ingest_base_url": 5}', '{"api_base_url": ["https://x.test"]}',
                     '{"ingest_base_url": {"url": "https://x.test"}}'):
            with self.subTest(text=text):
                self.write_bundle({ENDPOINTS_FILE: text})
                exc = self.assertConfigError(ENDPOINTS_FILE)
                self.assertIn("base_url", str(exc))

    def test_not_utf8(self) -> None:
        self.write_bundle()
        (self.dir / ENDPOINTS_FILE).write_bytes(b'{"api_base_url": "\xff\xfe"}')
        self.assertConfigError(ENDPOINTS_FILE)

    def test_empty_device_id_override(self) -> None:
        self.write_bundle()
        with self.assertRaises(ConfigError):
            load_bundle(self.dir, device_id="  ")


class EndpointFallbackTest(BundleTestCase):
    def base_url_for(self, endpoints: str) -> str:
        self.write_bundle({ENDPOINTS_FILE: endpoints})
        return load_bundle(self.dir).base_url

    def test_ingest_first(self) -> None:
        self.assertEqual(self.base_url_for(ENDPOINTS), "https://ingest.example.test")

    def test_api_when_no_ingest(self) -> None:
        self.assertEqual(self.base_url_for('{"api_base_url": " https://api.example.test "}'),
                         "https://api.example.test")

    def test_empty_or_null_ingest_falls_through(self) -> None:
        for ingest in ('""', "null"):
            with self.subTest(ingest=ingest):
                text = '{"ingest_base_url": %s, "api_base_url": "https://api.example.test"}' % ingest
                self.assertEqual(self.base_url_for(text), "https://api.example.test")

    def test_no_key_we_read_is_78_naming_the_file_and_both_key_sets(self) -> None:
        # Once a silent fall-back to https://tesaiot.com: a misspelled key sent data elsewhere.
        for text, unknown in (('{"ingest_base_ur1": "https://x.test"}', "ingest_base_ur1"),
                              ('{"mqtt_host": "x.test"}', "mqtt_host"),
                              ("{}", "no keys at all"),
                              ('{"ingest_base_url": "", "api_base_url": null}', "ingest_base_url")):
            with self.subTest(text=text):
                self.write_bundle({ENDPOINTS_FILE: text})
                exc = self.assertConfigError(ENDPOINTS_FILE)
                self.assertIn(unknown, exc.message)
                self.assertIn("ingest_base_url, api_base_url", exc.message)
                self.assertIn("--base-url", exc.hint)
        self.write_bundle({ENDPOINTS_FILE: '{"ingestBaseUrl": "https://x.test"}'})
        self.assertIn('"ingestBaseUrl" should be "ingest_base_url"', self.assertConfigError(ENDPOINTS_FILE).hint)

    def test_a_misspelled_key_is_warned_about_even_beside_a_usable_one(self) -> None:
        self.write_bundle({ENDPOINTS_FILE: '{"api_base_url": "https://api.test", "ingest-base-url": "https://i.test"}'})
        b = load_bundle(self.dir)
        self.assertEqual(b.base_url, "https://api.test")
        self.assertEqual(len(b.warnings), 1, b.warnings)
        self.assertIn('"ingest-base-url" is not read; did you mean "ingest_base_url"?', b.warnings[0])
        self.assertIn(ENDPOINTS_FILE, b.warnings[0])

    def test_other_keys_of_a_real_bundle_are_not_noise(self) -> None:
        text = ('{"ingest_base_url": "https://i.test", "api_base_url": "https://a.test", "mqtt_host": "m.test", '
                '"mqtt_port": 8883, "mtls_base_url": "https://i.test:9444", "mtls_ingest_base_url": "x", '
                '"rest_base_url": "x", "web_base_url": "x", "version": 2}')
        self.write_bundle({ENDPOINTS_FILE: text})
        self.assertEqual(load_bundle(self.dir).warnings, ())


class CaFileOverrideTest(BundleTestCase):
    def test_ca_file_override_makes_the_bundle_ca_optional(self) -> None:
        self.write_bundle({CA_FILE: None})
        with self.assertRaises(CredentialMissing):
            load_bundle(self.dir)
        other = self.dir / "elsewhere.pem"
        other.write_text(CA_TEXT, encoding="utf-8")
        self.assertEqual(load_bundle(self.dir, ca_file=other).ca_file, str(other))


class OverrideTest(BundleTestCase):
    def test_device_id_override_skips_file(self) -> None:
        self.write_bundle({DEVICE_ID_FILE: None})
        b = load_bundle(self.dir, device_id=" dev-override ")
        self.assertEqual(b.device_id, "dev-override")

    def test_device_id_override_skips_malformed_file(self) -> None:
        self.write_bundle({DEVICE_ID_FILE: "garbage"})
        self.assertEqual(load_bundle(self.dir, device_id=DEVICE_ID.lower()).device_id, DEVICE_ID.lower())

    def test_base_url_override_skips_file(self) -> None:
        self.write_bundle({ENDPOINTS_FILE: None})
        b = load_bundle(self.dir, base_url=" https://override.example.test ")
        self.assertEqual(b.base_url, "https://override.example.test")

    def test_base_url_override_skips_malformed_file(self) -> None:
        self.write_bundle({ENDPOINTS_FILE: "{broken"})
        self.assertEqual(load_bundle(self.dir, base_url="https://o.test").base_url, "https://o.test")

    def test_overrides_do_not_skip_key_or_ca(self) -> None:
        for name in (API_KEY_FILE, CA_FILE):
            with self.subTest(missing=name):
                self.write_bundle()
                (self.dir / name).unlink()
                with self.assertRaises(CredentialMissing) as cm:
                    load_bundle(self.dir, device_id="d", base_url="https://o.test")
                self.assertIn(name, str(cm.exception))


@unittest.skipUnless(os.name == "posix", "file modes are POSIX")
class PermissionWarningTest(BundleTestCase):
    def test_group_readable_key_warns(self) -> None:
        self.write_bundle()
        key = self.dir / API_KEY_FILE
        os.chmod(str(key), 0o644)
        b = load_bundle(self.dir)
        self.assertEqual(len(b.warnings), 1)
        self.assertIn(str(key), b.warnings[0])
        self.assertIn("chmod 600", b.warnings[0])
        self.assertNoKey(b.warnings[0])

    def test_private_key_does_not_warn(self) -> None:
        self.write_bundle()
        os.chmod(str(self.dir / API_KEY_FILE), 0o600)
        self.assertEqual(load_bundle(self.dir).warnings, ())

    def test_group_or_other_access_alone_warns(self) -> None:
        for mode in (0o640, 0o604, 0o620, 0o601, 0o400):
            with self.subTest(mode=oct(mode)):
                self.write_bundle()
                os.chmod(str(self.dir / API_KEY_FILE), mode)
                self.assertEqual(len(load_bundle(self.dir).warnings), 0 if mode == 0o400 else 1)

    def test_missing_path_gives_no_warning(self) -> None:
        self.assertIsNone(bundle_mod.key_permission_warning(self.tmp / "absent"))


class SecretNeverShownTest(BundleTestCase):
    def test_repr_hides_key(self) -> None:
        self.write_bundle()
        os.chmod(str(self.dir / API_KEY_FILE), 0o644)
        b = load_bundle(self.dir)
        self.assertNoKey(repr(b))
        self.assertNoKey(str(b))
        self.assertIn(DEVICE_ID.lower(), repr(b))  # the repr is still useful

    def test_no_error_quotes_the_key(self) -> None:
        # Every way the bundle can be wrong while api_key.txt holds (something like) the key.
        cases = {
            "bad device id": {DEVICE_ID_FILE: "x" + API_KEY},
            "two keys": {API_KEY_FILE: API_KEY + " " + API_KEY},
            "key on two lines": {API_KEY_FILE: API_KEY[:10] + "\n" + API_KEY[10:]},
            "bad json": {ENDPOINTS_FILE: '{"api_base_url": "%s' % API_KEY},
            "non-string url": {ENDPOINTS_FILE: '{"api_base_url": ["%s"]}' % API_KEY},
            "missing ca": {CA_FILE: None},
        }
        for label, files in cases.items():
            with self.subTest(case=label):
                shutil.rmtree(str(self.dir))
                self.dir.mkdir()
                self.write_bundle(files)
                with self.assertRaises(IotPostError) as cm:
                    load_bundle(self.dir)
                for text in (str(cm.exception), repr(cm.exception), cm.exception.hint or ""):
                    self.assertNoKey(text)
                    self.assertNotIn(API_KEY[:10], text)


class DefaultCertsDirTest(unittest.TestCase):
    """Lookup order: $IOTPOST_CERTS_DIR, ./certs_credentials, beside the scripts (a clone), else ./certs_credentials."""

    def setUp(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="iotpost-lookup-"))
        self.addCleanup(shutil.rmtree, str(self.root), True)
        self.script = self.root / "clone"
        self.cwd = self.root / "work"
        self.cwd.mkdir()

    def test_without_env_or_any_folder_names_the_current_folder(self) -> None:
        self.assertEqual(default_certs_dir(self.script, {}, cwd=self.cwd), str(self.cwd / "certs_credentials"))
        self.assertEqual(default_certs_dir(None, {}, cwd=self.cwd), str(self.cwd / "certs_credentials"))

    def test_beside_the_scripts_when_the_current_folder_has_none(self) -> None:
        (self.script / "certs_credentials").mkdir(parents=True)
        self.assertEqual(default_certs_dir(self.script, {}, cwd=self.cwd), str(self.script / "certs_credentials"))

    def test_current_folder_wins_over_beside_the_scripts(self) -> None:
        (self.script / "certs_credentials").mkdir(parents=True)
        (self.cwd / "certs_credentials").mkdir()
        self.assertEqual(default_certs_dir(self.script, {}, cwd=self.cwd), str(self.cwd / "certs_credentials"))

    def test_env_wins_over_the_current_folder(self) -> None:
        (self.cwd / "certs_credentials").mkdir()
        self.assertEqual(default_certs_dir(self.script, {CERTS_DIR_ENV: "/etc/b"}, cwd=self.cwd), "/etc/b")

    def test_blank_env_is_ignored(self) -> None:
        self.assertEqual(default_certs_dir(self.script, {CERTS_DIR_ENV: "  "}, cwd=self.cwd),
                         str(self.cwd / "certs_credentials"))

    def test_with_env(self) -> None:
        self.assertEqual(default_certs_dir(Path("/opt/iotpost"), {CERTS_DIR_ENV: " /etc/iotpost/certs "}),
                         "/etc/iotpost/certs")

    def test_env_name(self) -> None:
        self.assertEqual(CERTS_DIR_ENV, "IOTPOST_CERTS_DIR")

    def test_the_seed_scripts_name_still_works_and_the_new_one_wins(self) -> None:
        script = Path("/opt/iotpost")
        self.assertEqual(default_certs_dir(script, {"TESAIOT_CERTS_DIR": "/etc/old"}), "/etc/old")
        self.assertEqual(default_certs_dir(script, {"TESAIOT_CERTS_DIR": "/etc/old", CERTS_DIR_ENV: "/etc/new"}),
                         "/etc/new")


if __name__ == "__main__":
    unittest.main()


class ReviewFindingsTest(unittest.TestCase):
    def test_deeply_nested_endpoints_json_is_a_config_error(self) -> None:
        with self.assertRaises(ConfigError):
            bundle_mod.parse_endpoints("[" * 100000 + "]" * 100000, "endpoints.json")

    def test_certs_dir_that_is_a_file_says_so(self) -> None:
        with tempfile.NamedTemporaryFile() as fh:
            with self.assertRaises(CredentialMissing) as ctx:
                load_bundle(Path(fh.name))
        self.assertIn("is a file", str(ctx.exception))
