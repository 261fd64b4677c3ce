"""
What rcp's processes share as standalone modules of a real EVerest: the
start of their modules and the check that the station has not gone
global-ready without them.

A standalone module may announce itself ready only once per manager run
(a second ModuleReady makes the manager repeat global ready, which aborts
the framework's modules).  A restarted rcp process cannot know whether it
announced itself before, so it looks at the manager's retained
C{{P}module_names} topic: the manager publishes it before the modules
start and clears it once every module is ready.  Configuration answered
but no C{module_names} retained means the station runs already, and the
process must end (the station has to restart as a whole).  A manager run
with C{--retain-topics} keeps the topic, so this check cannot see a
running station then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ...config import ConfigError
from .connection import MqttConnection, MqttMessage
from .module import MqttModule

#: seconds the round trip through the broker may take
PROBE_TIMEOUT: Final = 10.0

log = Logger()


class StationRunning(Exception):
    """The station's manager went global-ready before this process started."""


class BrokerLost(Exception):
    """The broker connection went down while starting."""


async def hasModuleNames(
    connection: MqttConnection, prefix: str, clock: IReactorTime, timeout: float = PROBE_TIMEOUT
) -> bool:
    """
    Whether the broker holds the manager's retained C{{prefix}module_names}.

    The broker sends a retained message to a new subscriber before anything
    published after the subscription, so a message of our own published
    afterwards, on a topic outside the prefix, marks the point where the
    retained one would have arrived.

    @raise TimeoutError: the broker did not pass our own message on in time.
    """
    topic = f"{prefix}module_names"
    probe = f"rcp-probe/{connection.clientId}"
    retained: list[MqttMessage] = []
    echoed: Deferred[None] = Deferred()

    def received(message: MqttMessage) -> None:
        if message.retain and message.payload:
            retained.append(message)

    def echo(message: MqttMessage) -> None:
        if not echoed.called:
            echoed.callback(None)

    try:
        await connection.subscribe(topic, received)
        await connection.subscribe(probe, echo)
        connection.publish(probe, b"probe", qos=2)
        timer = clock.callLater(timeout, echoed.cancel)
        try:
            await echoed
        except Exception:
            raise TimeoutError(f"the broker did not echo {probe} within {timeout:g} s") from None
        if timer.active():
            timer.cancel()
    finally:
        connection.unsubscribe(topic, received)
        connection.unsubscribe(probe, echo)
    return bool(retained)


async def startModules(
    connection: MqttConnection, modules: Iterable[MqttModule], clock: IReactorTime
) -> None:
    """
    Start C{modules} (get their configuration), then make sure their
    station has not gone global-ready already.

    @raise StationRunning: it has.
    @raise BrokerLost: the broker went away meanwhile.
    """
    modules = list(modules)
    lost = connection.whenLost()
    try:
        for module in modules:
            await module.start()
        names = await hasModuleNames(connection, modules[0].prefix, clock)
    except Exception as e:
        if lost.called or any(m.stopped for m in modules):
            raise BrokerLost(str(e) or type(e).__name__) from None
        raise
    if not names:
        raise StationRunning(
            "EVerest answered the configuration request of"
            f" {', '.join(m.moduleId for m in modules)}"
            f" but its retained {modules[0].prefix}module_names is gone: the station went"
            " global-ready already, and a second ModuleReady in this manager run would abort"
            " its modules; restart the whole station (EVerest first)"
        )


class StandaloneProcess(Service):
    """
    What an rcp process that is standalone modules of its board's EVerest
    does for every kind of module: one broker connection, the start of its
    modules with the running-station check, and ending the process once
    (a lost broker ends it too).

    @param broker: the broker's host and port.
    @param end: ends the process with an exit code and a reason.
    """

    log = Logger()

    #: the command's name, for log lines and errors
    role: ClassVar[str] = "rcp"

    def __init__(
        self,
        reactor: Any,
        broker: Callable[[Mapping[str, str]], tuple[str, int]],
        environ: Mapping[str, str],
        clientId: str,
        end: Callable[[int, str], None],
    ) -> None:
        self.reactor = reactor
        self._end = end
        try:
            host, port = broker(environ)
        except ConfigError as e:
            raise SystemExit(f"{self.role}: {e}") from None
        self.connection = MqttConnection(reactor, host, port, clientId=clientId)
        self.ended: tuple[int, str] | None = None
        #: fires when the start-up is over (done, or failed and ended)
        self.started: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        self.connection.whenLost().addCallback(
            lambda reason: self.end(1, f"lost the MQTT broker ({reason})")
        )
        self.connection.start()
        Deferred.fromCoroutine(self._start()).addBoth(self._startDone)

    def _startDone(self, result: object) -> None:
        if not self.started.called:
            self.started.callback(None)

    async def _start(self) -> None:
        """The start-up of this kind of process (after connecting)."""
        raise NotImplementedError

    async def startModules(self, modules: Iterable[MqttModule]) -> bool:
        """
        Get the modules' configuration and check that the station is not
        running already.

        @return: whether to go on; when not, the process is ending.
        """
        try:
            await startModules(self.connection, modules, self.reactor)
        except StationRunning as e:
            self.end(1, str(e))
            return False
        except BrokerLost as e:
            self.end(1, f"lost the MQTT broker while starting ({e})")
            return False
        except Exception as e:
            self.log.failure("{role}: start-up failed", role=self.role)
            self.end(1, f"start-up failed: {e}")
            return False
        return bool(self.running) and self.ended is None

    def end(self, code: int, reason: str) -> None:
        """
        End the process (once).  While the service stops (a stop by signal),
        what fails on the way is part of the stop, not an end.
        """
        if self.ended is not None:
            return
        if not self.running:
            self.log.info("{role}: stopping ({reason})", role=self.role, reason=reason)
            return
        self.ended = (code, reason)
        self.log.error(
            "{role}: ending with exit code {code}: {reason}",
            role=self.role,
            code=code,
            reason=reason,
        )
        self._end(code, reason)
