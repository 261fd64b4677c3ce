"""
The real EVerest manager in tests: the built manager of
C{../shared/everest/} (framework v0.25.0, core 2026.02.0), used the way a
Debian package would be, never copied into the project.

The tarball is unpacked once per test process into a temporary folder
(L{basePrefix}); each test builds its own prefix from it (L{buildPrefix}:
rcp's manifests and interface, the core manifests its config names, the
test's everestpy modules), writes a config (L{writeConfig}), checks it
(L{check}) or runs a manager (L{Manager}); L{startBoard} does it all for
one board on its own broker.  Without the tarball the tests skip, saying
where they looked.

The manager cannot start everest-core's own modules (they are not in the
tarball, only their manifests): a running board consists of rcp's
standalone modules and everestpy modules such as those of
C{tests/everest_modules/} (C{module.py} + C{manifest.yaml} per folder; see
L{testModules}).
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from .common import ETC, ROOT
from .mosquitto import Mosquitto, startBroker

TARBALL_NAME = "everest-2026.02.0-debian12-amd64.tar.gz"
#: the tests' everestpy modules (C{module.py} + C{manifest.yaml} per folder)
TEST_MODULES = Path(__file__).resolve().parent / "everest_modules"
#: copied next to every test module's C{module.py}
SAMPLES = TEST_MODULES / "samples.py"
RCP_MODULES = ("SatelliteAgent", "SatelliteController", "SystemAggregator")

#: manager log lines that are errors (its severity tags, maybe coloured)
ERROR_LINE = re.compile(r"\[(?:\x1b\[[0-9;]*m)?(ERRO|CRIT)(?:\x1b\[[0-9;]*m)?\]")
#: what the framework logs when a value fails schema validation (caller,
#: callee or publisher; the message may span lines)
SCHEMA_PROBLEM = re.compile(
    r"could not be validated with schema|validation of the \w+ failed|SchemaValidationError"
)

_base: Path | None = None


def tarballCandidates() -> list[Path]:
    """Where the tarball is looked for: C{$RCP_EVEREST_TARBALL}, then C{../shared/everest/}."""
    given = os.environ.get("RCP_EVEREST_TARBALL")
    candidates = [Path(given)] if given else []
    for up in (ROOT.parent, ROOT.parent.parent):
        candidates.append(up / "shared" / "everest" / TARBALL_NAME)
    return candidates


def tarball() -> Path:
    """The manager's tarball; skip the test when there is none."""
    for candidate in tarballCandidates():
        if candidate.is_file():
            return candidate
    raise SkipTest(
        "the real EVerest manager is not here (looked for "
        + ", ".join(str(c) for c in tarballCandidates())
        + "; set RCP_EVEREST_TARBALL)"
    )


def basePrefix() -> Path:
    """The unpacked EVerest prefix, once per test process, removed at exit."""
    global _base
    if _base is None:
        source = tarball()
        directory = Path(tempfile.mkdtemp(prefix="rcp-everest-"))
        atexit.register(shutil.rmtree, directory, True)
        with tarfile.open(source) as archive:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                archive.extractall(directory, filter="data")
            else:
                archive.extractall(directory)
        [prefix] = [p for p in directory.iterdir() if (p / "bin" / "manager").is_file()]
        _base = prefix
    return _base


def coreManifest(name: str) -> Path | None:
    """The manifest of an everest-core module, if core 2026.02.0 has it."""
    path = basePrefix() / "core-manifests" / name / "manifest.yaml"
    return path if path.is_file() else None


def buildPrefix(
    directory: Path,
    modules: Mapping[str, Path] | None = None,
    core: Iterable[str] = (),
    logLevel: str = "INFO",
) -> Path:
    """
    An EVerest prefix of its own for one board: a copy of L{basePrefix}
    with rcp's manifests (all of C{etc/everest/modules}) and C{satellite}
    interface installed.

    @param modules: folders (C{module.py} + C{manifest.yaml}) to install as
        modules, by module name; each gets a copy of L{SAMPLES}.
    @param core: everest-core modules whose manifests to install (for
        C{--check}; the manager cannot start them, they are not built).
    @param logLevel: the least severity the manager and its modules log
        (DEBG, INFO, WARN, ERRO, CRIT; the tarball's default is DEBG).
    @return: the prefix.
    """
    prefix = directory / "everest"
    shutil.copytree(basePrefix(), prefix, symlinks=True)
    logging = prefix / "etc" / "everest" / "default_logging.cfg"
    logging.write_text(
        re.sub(
            r'^Filter="%Severity% >= \w+"',
            f'Filter="%Severity% >= {logLevel}"',
            logging.read_text(),
            flags=re.M,
        )
    )
    installed = prefix / "libexec" / "everest" / "modules"
    for name in RCP_MODULES:
        target = installed / name
        target.mkdir(parents=True)
        shutil.copy(ETC / "everest" / "modules" / name / "manifest.yaml", target)
    shutil.copy(
        ETC / "everest" / "interfaces" / "satellite.yaml",
        prefix / "share" / "everest" / "interfaces",
    )
    for name in core:
        manifest = coreManifest(name)
        if manifest is None:
            raise ValueError(f"core 2026.02.0 has no module {name}")
        (installed / name).mkdir()
        shutil.copy(manifest, installed / name)
    for name, folder in (modules or {}).items():
        shutil.copytree(folder, installed / name)
        shutil.copy(SAMPLES, installed / name)
    return prefix


def writeConfig(
    path: Path, activeModules: Mapping[str, Any], settings: Mapping[str, Any] | None = None
) -> Path:
    """A station config: C{settings} and C{active_modules}."""
    config: dict[str, Any] = {"active_modules": dict(activeModules)}
    if settings:
        config["settings"] = dict(settings)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def brokerSettings(broker: Mosquitto, validate: bool = True) -> dict[str, Any]:
    """The C{settings} of a config whose manager uses C{broker}."""
    return {
        "mqtt_broker_host": broker.host,
        "mqtt_broker_port": broker.port,
        "validate_schema": validate,
    }


async def check(prefix: Path, config: Path) -> tuple[int, str]:
    """C{manager --check} of C{config}: its exit code and its output."""
    out, err, code = await getProcessOutputAndValue(
        str(prefix / "bin" / "manager"),
        ["--prefix", str(prefix), "--config", str(config), "--check"],
        env=dict(os.environ),
    )
    return code, (out + err).decode(errors="replace")


def errorLines(text: str) -> list[str]:
    """The manager's ERRO and CRIT lines."""
    return [line for line in text.splitlines() if ERROR_LINE.search(line)]


def schemaProblems(text: str) -> list[str]:
    """The lines of a manager's log (its modules' included) about failed schema validation."""
    return [line for line in text.splitlines() if SCHEMA_PROBLEM.search(line)]


class Manager:
    """
    One running manager (C{--status-fifo}), its output in C{directory}.

    @param env: more environment for it and the modules it starts.
    """

    def __init__(
        self,
        prefix: Path,
        config: Path,
        directory: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.prefix = prefix
        self.config = config
        self.directory = directory
        self.env = dict(env or {})
        self.logPath = directory / "manager.log"
        self.fifoPath = directory / "status.fifo"
        self.status: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._fifo: int | None = None
        self._pending = b""
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self.fifoPath)
        # opened first, without blocking: the manager then opens it for writing at once
        self._fifo = os.open(self.fifoPath, os.O_RDONLY | os.O_NONBLOCK)
        self._log = open(self.logPath, "ab")
        self.process = subprocess.Popen(
            [
                str(self.prefix / "bin" / "manager"),
                "--prefix",
                str(self.prefix),
                "--config",
                str(self.config),
                "--status-fifo",
                str(self.fifoPath),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,  # its modules too go with stop()
        )

    def text(self) -> str:
        return self.logPath.read_text(errors="replace") if self.logPath.exists() else ""

    def _readStatus(self) -> None:
        if self._fifo is None:
            return
        try:
            data = os.read(self._fifo, 4096)
        except OSError as e:
            if e.errno != errno.EAGAIN:
                raise
            return
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        self.status.extend(line.decode(errors="replace") for line in lines)

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    async def whenStatus(self, status: str, timeout: float = 30.0) -> None:
        """Wait until the status fifo said C{status}; fail if the manager exits first."""
        deadline = time.monotonic() + timeout
        while True:
            self._readStatus()
            if status in self.status:
                return
            if self.exited:
                raise AssertionError(
                    f"the manager exited before {status} (status {self.status}):\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {status} from the manager in {timeout:g} s (status {self.status}):\n"
                    + self.tail()
                )
            await deferLater(reactor, 0.05)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the manager and its modules, SIGKILL after 10 s."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            try:
                os.killpg(process.pid, signal.SIGKILL)  # modules left behind
            except ProcessLookupError:
                pass
        if self._fifo is not None:
            os.close(self._fifo)
            self._fifo = None
        if self._log is not None:
            self._log.close()
            self._log = None


def startManager(
    case: TestCase,
    prefix: Path,
    config: Path,
    env: Mapping[str, str] | None = None,
) -> Manager:
    """A running manager for C{case}, stopped in its cleanup."""
    manager = Manager(prefix, config, Path(case.mktemp()), env)
    manager.start()
    case.addCleanup(manager.stop)
    return manager


@dataclass
class Board:
    """One board of a test station: its prefix, config, broker and manager."""

    prefix: Path
    config: Path
    broker: Mosquitto
    manager: Manager


def startBoard(
    case: TestCase,
    activeModules: Mapping[str, Any],
    modules: Mapping[str, Path] | None = None,
    core: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    validate: bool = True,
) -> Board:
    """
    A board for C{case}: its own mosquitto, a prefix with C{modules} (see
    L{buildPrefix}), a config of C{activeModules} using that broker (with
    C{validate_schema}), and a running manager; all stopped in the cleanup.
    Wait for the manager with L{Manager.whenStatus}, e.g.
    C{WAITING_FOR_STANDALONE_MODULES} before starting rcp's processes.
    """
    broker = startBroker(case)
    prefix = buildPrefix(Path(case.mktemp()), modules, core)
    config = writeConfig(
        Path(case.mktemp() + ".yaml"), activeModules, brokerSettings(broker, validate)
    )
    return Board(prefix, config, broker, startManager(case, prefix, config, env))


def testModules(board: str) -> dict[str, Path]:
    """The tests' everestpy modules of C{board} (a folder of L{TEST_MODULES}), by name."""
    return {p.name: p for p in sorted((TEST_MODULES / board).iterdir()) if p.is_dir()}


def resolve(prefix: Path, schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """A type schema with its C{$ref} (C{/file#/Name}) followed, in C{prefix}'s types."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name, _, typeName = ref.partition("#/")
    types = yaml.safe_load(
        (prefix / "share" / "everest" / "types" / f"{name[1:]}.yaml").read_text()
    )
    resolved: Mapping[str, Any] = types["types"][typeName]
    return resolve(prefix, resolved)


def validate(prefix: Path, schema: Mapping[str, Any], value: Any, where: str = "") -> list[str]:
    """
    The problems of C{value} against an EVerest type schema (the parts the
    core types use: type, enum, required, properties, additionalProperties,
    items, minItems, minimum, maximum); empty when it is valid.
    """
    schema = resolve(prefix, schema)
    kinds: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "integer": int,
        "number": (int, float),
        "null": type(None),
    }
    kind = schema.get("type")
    if "enum" in schema:
        return [] if value in schema["enum"] else [f"{where}: {value!r} not in {schema['enum']}"]
    if kind is not None:
        expected = kinds[kind]
        bad = not isinstance(value, expected) or (kind in ("integer", "number") and value is True)
        if bad or (kind in ("integer", "number") and isinstance(value, bool)):
            return [f"{where}: {value!r} is not {kind}"]
    problems: list[str] = []
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                problems.append(f"{where}: {key} missing")
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                problems += validate(prefix, properties[key], item, f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}: {key} not allowed")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{where}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                problems += validate(prefix, schema["items"], item, f"{where}[{index}]")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: {value} > {schema['maximum']}")
    return problems


def interface(prefix: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (prefix / "share" / "everest" / "interfaces" / f"{name}.yaml").read_text()
    )
    return data
