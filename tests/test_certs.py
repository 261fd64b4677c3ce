"""`rcp certs`: the station CA and the boards' certificates."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from rcp.certs import CertError, createStation
from rcp.cli import main

from .common import requireProgram


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


class CertsCommandTests(SynchronousTestCase):
    def test_defaultStation(self) -> None:
        directory = Path(self.mktemp())
        code, out, err = _run("certs", "--dir", str(directory))
        self.assertEqual((code, err), (0, ""))
        names = sorted(p.name for p in directory.iterdir())
        self.assertEqual(
            names,
            [
                "ca.key", "ca.pem", "main.key", "main.pem",
                "satellite-1.key", "satellite-1.pem", "satellite-2.key", "satellite-2.pem",
                "satellite-3.key", "satellite-3.pem",
            ],
        )  # fmt: skip
        for path in directory.iterdir():
            self.assertEqual(_mode(path), 0o600 if path.suffix == ".key" else 0o644, path.name)
        self.assertIn("satellite-3: copy", out)

    def test_opensslVerifiesTheChainAndNames(self) -> None:
        openssl = requireProgram("openssl")
        directory = Path(self.mktemp())
        _run("certs", "--dir", str(directory), "--satellites", "1")
        for board in ("main", "satellite-1"):
            result = subprocess.run(
                [openssl, "verify", "-CAfile", str(directory / "ca.pem"),
                 "-verify_hostname", board, str(directory / f"{board}.pem")],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        wrong = subprocess.run(
            [openssl, "verify", "-CAfile", str(directory / "ca.pem"),
             "-verify_hostname", "satellite-2", str(directory / "satellite-1.pem")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        self.assertNotEqual(wrong.returncode, 0)

    def test_noExpiryAndEarlyStart(self) -> None:
        directory = Path(self.mktemp())
        createStation(directory, ["main"])
        cert = x509.load_pem_x509_certificate((directory / "main.pem").read_bytes())
        self.assertEqual(cert.not_valid_before_utc.year, 1970)
        self.assertEqual(cert.not_valid_after_utc.year, 9999)

    def test_days(self) -> None:
        directory = Path(self.mktemp())
        createStation(directory, ["main"], days=30)
        cert = x509.load_pem_x509_certificate((directory / "main.pem").read_bytes())
        self.assertLess(cert.not_valid_after_utc.year, 9999)

    def test_addBoardReusesTheCa(self) -> None:
        directory = Path(self.mktemp())
        createStation(directory, ["main"])
        ca = (directory / "ca.pem").read_bytes()
        created, files = createStation(directory, ["satellite-7"])
        self.assertFalse(created)
        self.assertEqual((directory / "ca.pem").read_bytes(), ca)
        self.assertEqual([f.name for f in files], ["satellite-7"])

    def test_neverOverwrites(self) -> None:
        directory = Path(self.mktemp())
        createStation(directory, ["main"])
        key = (directory / "main.key").read_bytes()
        code, _, err = _run("certs", "--dir", str(directory), "--board", "main")
        self.assertEqual(code, 1)
        self.assertIn("main.pem exists; use --force", err)
        self.assertEqual((directory / "main.key").read_bytes(), key)
        code, _, _ = _run("certs", "--dir", str(directory), "--board", "main", "--force")
        self.assertEqual(code, 0)
        self.assertNotEqual((directory / "main.key").read_bytes(), key)
        self.assertEqual(_mode(directory / "main.key"), 0o600)

    def test_badNames(self) -> None:
        for name in ("Main", "../etc", "a_b", "-x", "ca", "", "x" * 64):
            self.assertRaises(CertError, createStation, Path(self.mktemp()), [name])
        code, _, err = _run("certs", "--dir", self.mktemp(), "--board", "../../x")
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("rcp certs: bad board name"), err)

    def test_duplicateName(self) -> None:
        self.assertRaises(CertError, createStation, Path(self.mktemp()), ["main", "main"])

    def test_brokenCaIsNotReplaced(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "ca.pem").write_text("garbage")
        code, _, err = _run("certs", "--dir", str(directory))
        self.assertEqual(code, 1)
        self.assertIn("cannot reuse the CA", err)
        self.assertEqual((directory / "ca.pem").read_text(), "garbage")

    def test_unwritableDirectory(self) -> None:
        blocker = Path(self.mktemp())
        blocker.write_text("a file, not a directory")
        code, _, err = _run("certs", "--dir", str(blocker / "sub"))
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("rcp certs: "), err)

    def test_noCommand(self) -> None:
        code, out, _ = _run()
        self.assertEqual(code, 2)
        self.assertIn("certs", out)

    def test_unknownOptionIsTheErrorAndAHint(self) -> None:
        """Not the usage text: the error, then a one-line hint."""
        for argv in (["--bogus"], ["certs", "--days"], ["demo", "--satellites", "x"]):
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                error = self.assertRaises(SystemExit, main, argv)
            self.assertEqual(error.code, 2)
            lines = err.getvalue().splitlines()
            self.assertEqual(len(lines), 2, lines)
            self.assertTrue(lines[0].startswith("rcp"), lines)
            self.assertIn("--", lines[0])
            self.assertRegex(lines[1], r"^try: rcp( \w+)? --help$")
            self.assertEqual(out.getvalue(), "")
