"""
`pip install .` into a fresh virtual environment gives working twistd
plugins and the rcp tool, as a Yocto recipe or a field install would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from .common import ROOT

_IGNORE = shutil.ignore_patterns(
    ".git", "_trial_temp*", "build", "dist", "*.egg-info", "__pycache__", "dropin.cache",
    ".mypy_cache", ".ruff_cache", ".hypothesis", "ci-out", ".venv",
)  # fmt: skip

#: Debian's own Python, externally managed (PEP 668): what a fresh Debian 12
#: has, and what the README's two commands must work with
_SYSTEM_PYTHON = Path("/usr/bin/python3")


def _run(*argv: str | Path, cwd: Path, extraEnv: dict[str, str] | None = None) -> str:
    # Nothing of this process's environment leaks in: trial's parallel
    # workers set PYTHONPATH, which would make pip skip the dependencies,
    # and a virtual environment's variables would choose the interpreter.
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "RCP_VENV", "PYTHON")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extraEnv or {})
    result = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout + result.stderr


class FreshInstallTests(TestCase):
    timeout = 900

    def setUp(self) -> None:
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        self.source = self.work / "source"
        shutil.copytree(ROOT, self.source, ignore=_IGNORE)

    def _installAndCheck(self) -> None:
        venv = self.work / "venv"
        _run(sys.executable, "-m", "venv", venv, cwd=self.work)
        pip = venv / "bin" / "pip"
        _run(pip, "install", "-q", "--disable-pip-version-check", self.source, cwd=self.work)
        elsewhere = self.work / "elsewhere"  # not the checkout: nothing found by accident
        elsewhere.mkdir()

        listing = _run(venv / "bin" / "twistd", "--help", cwd=elsewhere)
        self.assertIn("rcp-agent", listing)
        self.assertIn("rcp-controller", listing)
        for command, option in (("rcp-agent", "--listen"), ("rcp-controller", "--peer-name")):
            text = _run(venv / "bin" / "twistd", "-n", command, "--help", cwd=elsewhere)
            self.assertIn(option, text)
            self.assertIn("rpc.max_message_size", text)
        self.assertIn("rcp", _run(venv / "bin" / "rcp", "--version", cwd=elsewhere))
        _run(venv / "bin" / "rcp", "certs", "--dir", elsewhere / "pki", cwd=elsewhere)
        self.assertTrue((elsewhere / "pki" / "satellite-3.key").exists())
        # the README's first command works from a fresh install
        demo = _run(venv / "bin" / "rcp", "demo", "--satellites", "2", cwd=elsewhere)
        self.assertIn("steps observed", demo)
        self.assertNotIn("FAILED", demo)

        # What was installed: the package, its type marker, one dropin; no
        # tests, no namespace __init__ that would shadow Twisted's.
        site = next((venv / "lib").glob("python3*/site-packages"))
        self.assertTrue((site / "rcp" / "py.typed").exists())
        self.assertTrue((site / "twisted" / "plugins" / "rcp_plugins.py").exists())
        self.assertFalse((site / "tests").exists())
        record = next(site.glob("rcp-*.dist-info")) / "RECORD"
        installed = [line.split(",")[0] for line in record.read_text().splitlines()]
        self.assertNotIn("twisted/__init__.py", installed)
        self.assertNotIn("twisted/plugins/__init__.py", installed)
        self.assertFalse(any("dropin.cache" in path for path in installed))

    def test_freshVenv(self) -> None:
        return deferToThread(self._installAndCheck)  # type: ignore[return-value]

    def _buildWheel(self) -> list[str]:
        (self.source / "twisted" / "plugins" / "dropin.cache").write_bytes(b"stale")
        out = self.work / "wheel"
        _run(
            sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
            "-w", out, self.source, cwd=self.work,
        )  # fmt: skip
        [wheel] = out.glob("rcp-*.whl")
        with zipfile.ZipFile(wheel) as z:
            return z.namelist()

    async def test_wheelContents(self) -> None:
        names = await deferToThread(self._buildWheel)
        self.assertIn("twisted/plugins/rcp_plugins.py", names)
        self.assertFalse([n for n in names if n.startswith("tests/")])
        self.assertFalse([n for n in names if "dropin.cache" in n])
        self.assertIn("rcp/rpc/protocol.py", names)


class ReadmeCommandsTests(TestCase):
    """
    The two commands README.rst names, run as written with Debian's own
    Python, which refuses pip installs into itself (PEP 668).
    """

    timeout = 900

    def test_readmeNamesTheCommands(self) -> None:
        readme = (ROOT / "README.rst").read_text()
        self.assertIn("\n      bash tools/demo\n", readme)
        self.assertIn("\n      bash tools/run-tests\n", readme)

    def _runBoth(self, python: Path) -> tuple[str, str]:
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        source = work / "source"
        shutil.copytree(ROOT, source, ignore=_IGNORE)
        env = {"RCP_VENV": str(work / "venv"), "PYTHON": str(python)}
        demo = _run("bash", "tools/demo", "--satellites", "2", cwd=source, extraEnv=env)
        # one small test module stands for the suite: the same command
        tests = _run("bash", "tools/run-tests", "tests.test_certs", cwd=source, extraEnv=env)
        return demo, tests

    async def test_withTheSystemPython(self) -> None:
        python = _SYSTEM_PYTHON
        if not (python.exists() and list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED"))):
            python = Path(sys.executable)  # not a Debian machine: the same commands still work
        demo, tests = await deferToThread(self._runBoth, python)
        self.assertIn("steps observed", demo)
        self.assertNotIn("FAILED", demo)
        self.assertRegex(tests, r"PASSED \(successes=\d+\)")
