"""
meta-rcp's recipe, done by hand the way bitbake does it: a wheel built from
the source tree (python_setuptools_build_meta: python -m build --no-isolation
--wheel), installed with python -m installer --destdir into a staging root,
then the recipe's own do_install:append; every file its packages name
(FILES:...) is there, every file there belongs to a package, and twistd run
from that root, with the plugin cache the image build makes, lists both
plugins without rewriting the cache.  oelint-adv finds no error in the layer.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from .common import ROOT
from .test_packaging import _IGNORE

LAYER = ROOT / "meta-rcp"
RECIPE = LAYER / "recipes-connectivity" / "rcp" / "rcp_0.1.0.bb"
_PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"
#: bitbake's values for the variables the recipe uses (oe-core's defaults)
VARIABLES = {
    "bindir": "/usr/bin",
    "sysconfdir": "/etc",
    "datadir": "/usr/share",
    "libexecdir": "/usr/libexec",
    "systemd_system_unitdir": "/usr/lib/systemd/system",
    "PYTHON_SITEPACKAGES_DIR": f"/usr/lib/{_PYVER}/site-packages",
    "PN": "rcp",
    "RCP_EVEREST_UNIT": "everest.service",
    "RCP_EVEREST_CONFIG": "/etc/everest/config.yaml",
}


def _expand(text: str, extra: dict[str, str]) -> str:
    values = {**VARIABLES, **extra}
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


def _assignments(recipe: str) -> dict[str, str]:
    """NAME -> value of each plain assignment (=, +=), continuation lines joined."""
    joined = recipe.replace("\\\n", " ")
    found: dict[str, str] = {}
    for match in re.finditer(r'^([\w:${}\-]+)\s*(\+?=)\s*"([^"]*)"', joined, re.M):
        name, op, value = match.groups()
        found[name] = (found.get(name, "") + " " + value) if op == "+=" else value
    return found


def _run(
    argv: list[str], check: bool = True, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    fullEnv = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    fullEnv.update(env or {})
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=600, check=False, env=fullEnv, cwd=cwd
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout + result.stderr


class RecipeTests(TestCase):
    timeout = 600

    def test_oelint(self) -> None:
        oelint = Path(sys.executable).parent / "oelint-adv"
        recipes = sorted(str(p) for p in LAYER.rglob("*.bb*"))
        for release in ("scarthgap", "whinlatter"):
            # exit 1 on warnings too; errors are what fails the layer
            out = _run([str(oelint), "--quiet", "--release", release, *recipes], False, cwd=LAYER)
            self.assertIn("rcp_0.1.0.bb", out)
            errors = [line for line in out.splitlines() if ":error:" in line]
            self.assertEqual(errors, [], release)

    def test_stagingRoot(self) -> object:
        return deferToThread(self._staging)

    def _staging(self) -> None:
        work = Path(self.mktemp()).resolve()
        source = work / "source"
        shutil.copytree(ROOT, source, ignore=_IGNORE)
        wheels = work / "wheels"
        _run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(wheels),
              str(source)], cwd=work)  # fmt: skip
        (wheel,) = wheels.glob("rcp-*.whl")
        staging = work / "image"
        _run([sys.executable, "-m", "installer", "--destdir", str(staging), "--prefix", "/usr",
              str(wheel)], cwd=work)  # fmt: skip
        site = staging / VARIABLES["PYTHON_SITEPACKAGES_DIR"].lstrip("/")
        self.assertTrue((site / "rcp" / "__init__.py").exists(), sorted(staging.rglob("*"))[:20])

        recipe = RECIPE.read_text()
        body = re.search(r"^do_install:append\(\) \{\n(.*?)^\}", recipe, re.M | re.S)
        assert body is not None
        # RCP_GROUP: the recipe's useradd makes the group; this machine has none
        script = _expand(body.group(1), {"S": str(source), "D": str(staging)})
        script = script.replace('RCP_GROUP="rcp"', 'RCP_GROUP=""')
        _run(["sh", "-euc", script], cwd=work)

        assignments = _assignments(recipe)
        packages: dict[str, list[str]] = {}
        for name, value in assignments.items():
            if name.startswith("FILES:"):
                packages[_expand(name[len("FILES:") :], {})] = _expand(value, {}).split()
        self.assertEqual(sorted(packages), ["rcp", "rcp-agent", "rcp-controller"])
        for package, patterns in packages.items():
            for pattern in patterns:
                matches = list(staging.glob(pattern.lstrip("/")))
                self.assertTrue(matches, f"FILES:{package}: {pattern} is not in the staging root")

        # the other way round: nothing installed that no package takes
        # (bitbake's installed-vs-shipped), byte code aside (FILES of
        # python3-dir packages take __pycache__ with their modules)
        claimed = [p for patterns in packages.values() for p in patterns]
        for path in staging.rglob("*"):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            relative = "/" + str(path.relative_to(staging))
            owned = any(
                fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(relative, p.rstrip("/") + "/*")
                for p in claimed
            )
            self.assertTrue(owned, f"{relative} is in no package")

        units = staging / VARIABLES["systemd_system_unitdir"].lstrip("/")
        for unit in ("rcp-agent.service", "rcp-controller@.service"):
            self.assertEqual((units / unit).read_text(), (ROOT / "etc" / unit).read_text())

        # twistd from the staging root: its rcp, and Twisted from this
        # environment; -S keeps the checkout's editable install (a .pth) out
        pythonpath = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])
        env = {"PYTHONPATH": pythonpath}
        elsewhere = work / "elsewhere"
        elsewhere.mkdir()
        cache = site / "twisted" / "plugins" / "dropin.cache"
        helper = staging / "usr" / "libexec" / "rcp" / "rcp-plugin-cache"
        _run([sys.executable, "-S", str(helper), str(staging)], cwd=elsewhere, env=env)
        self.assertTrue(cache.exists())
        before = (cache.stat().st_mtime_ns, cache.read_bytes())
        listing = _run(
            [sys.executable, "-S", "-c",
             "import sys, twisted.scripts.twistd as t; sys.argv = ['twistd', '--help']; t.run()"],
            cwd=elsewhere, env=env,
        )  # fmt: skip
        self.assertIn("rcp-agent", listing)
        self.assertIn("rcp-controller", listing)
        import rcp

        self.assertNotIn(str(ROOT), listing)
        self.assertTrue(Path(rcp.__file__).is_relative_to(ROOT))  # this test's own rcp
        self.assertEqual((cache.stat().st_mtime_ns, cache.read_bytes()), before)
