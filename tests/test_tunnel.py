"""
The tunnel, generated from the table, over a real msgpack-rpc connection in
memory: every command and variable of every channel both ways, the
"if absent" answers, errors, push_var, coalescing and order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from rcp.everest.interface import CommandError, makeError
from rcp.everest.sim.bus import SimBus, SimModule
from rcp.rpc import MethodRegistry, RpcProtocol
from rcp.tunnel.agent import AgentTunnel
from rcp.tunnel.controller import ControllerTunnel
from rcp.tunnel.events import EventQueue
from rcp.tunnel.table import (
    CHANNELS,
    PUSH_CHANNELS,
    REQUIRED,
    RETRIEVE,
    Codec,
    Command,
)

# An EVerest value of the right type for each encoding.
SAMPLES: dict[Codec, Any] = {
    Codec.JSON: {"a": [1, 2.5, "x"], "b": {"c": None, "d": True}},
    Codec.INT: 7,
    Codec.BOOL: True,
    Codec.STR: "Soft",
    Codec.NIL: None,
}


def _result(command: Command) -> Any:
    if command.result is Codec.STR:
        return "Accepted"
    return SAMPLES[command.result]


class Harness:
    """A satellite and a main board, linked by one RPC connection."""

    def __init__(self, case: SynchronousTestCase, absent: tuple[str, ...] = ()) -> None:
        self.clock = Clock()
        self.satellite = SimBus(self.clock, "satellite")
        self.main = SimBus(self.clock, "main")
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        # one device module per channel on the satellite, answering every command
        self.devices: dict[str, SimModule] = {}
        for channel in CHANNELS:
            if channel.name in absent:
                continue
            device = self.satellite.module(f"dev_{channel.name}")
            for command in channel.commands:
                device.provideCommand("main", command.name, self._device(channel.name, command))
            self.devices[channel.name] = device
        self.agentModule = self.satellite.module(
            "agent",
            {c.name: [(f"dev_{c.name}", "main")] for c in CHANNELS if c.name not in absent},
        )
        self.satelliteSubscriber = self.satellite.module(
            "satsub", {p.name: [("agent", p.name)] for p in PUSH_CHANNELS}
        )
        # the main board: the controller, what it requires, and a consumer
        self.mainAuth = self.main.module("auth")
        self.mainSystem = self.main.module("sysagg")
        self.controllerModule = self.main.module(
            "ctl",
            {"auth": [("auth", "main")], "system": [("sysagg", "main")]},
            mapping={"evse": 2},
        )
        self.consumer = self.main.module("consumer", {c.name: [("ctl", c.name)] for c in CHANNELS})
        self.mainErrors: list[dict[str, Any]] = []
        self.consumer.subscribeAllErrors(self.mainErrors.append)

        self.overflows = 0
        self.queue = EventQueue(self.clock, self._overflow, limit=50, holdTime=1.0)
        self.agent = AgentTunnel(self.agentModule, self.queue)
        self.agent.provide()
        self.agent.subscribe()
        methods = MethodRegistry()
        self.agent.register(methods)
        methods.register(RETRIEVE, self.queue.retrieve)
        self.client, self.server, self.pump = connectedServerAndClient(
            lambda: RpcProtocol(self.clock, methods),
            lambda: RpcProtocol(self.clock, MethodRegistry()),
            clock=self.clock,
        )
        self.wire: list[tuple[str, tuple[Any, ...]]] = []
        self.controller = ControllerTunnel(self.controllerModule, self._call)
        self.controller.provide()
        self.controller.subscribePush()

    def _overflow(self) -> None:
        self.overflows += 1

    def _call(self, method: str, *params: Any) -> Any:
        self.wire.append((method, params))
        return self.client.call(method, *params)

    def _device(self, channel: str, command: Command) -> Any:
        def handler(args: dict[str, Any]) -> Any:
            self.received.append((channel, command.name, args))
            return _result(command)

        return handler

    def settle(self) -> None:
        for _ in range(20):
            self.clock.advance(0)
            self.pump.flush()

    def poll(self) -> int:
        d = self.client.call(RETRIEVE)
        self.settle()
        if not d.called:
            self.clock.advance(1.0)
            self.settle()
        batch: str = self.case_successResultOf(d)
        count = self.controller.deliver(batch)
        self.settle()
        return count

    def case_successResultOf(self, d: Any) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        assert results, "no result"
        return results[0]


class CommandTests(SynchronousTestCase):
    def test_everyCommandBothWays(self) -> None:
        h = Harness(self)
        for channel in CHANNELS:
            for command in channel.commands:
                args = {arg.name: SAMPLES[arg.codec] for arg in command.args}
                d = h.consumer.call(channel.name, command.name, args)
                h.settle()
                self.assertEqual(self.successResultOf(d), _result(command), command.name)
                self.assertEqual(h.received[-1], (channel.name, command.name, args))
                # on the wire: the upstream name and encodings
                method, params = h.wire[-1]
                self.assertEqual(method, channel.rpcName(command))
                for arg, value in zip(command.args, params, strict=True):
                    if arg.codec is Codec.JSON:
                        self.assertIsInstance(value, str)
                        self.assertEqual(json.loads(value), args[arg.name])
                    else:
                        self.assertEqual(value, args[arg.name])

    def test_upstreamSpellings(self) -> None:
        names = {c.rpcName(cmd) for c in CHANNELS for cmd in c.commands}
        for name in ("sytem_reset", "sytem_is_reset_allowed", "system_update_firmware",
                     "evse_manager_enable_disable", "energy_enforce_limits",
                     "uk_random_delay_set_duration_s",
                     "iso15118_extensions_set_get_certificate_response"):  # fmt: skip
            self.assertIn(name, names)

    def test_argsNullForArgumentlessCommands(self) -> None:
        h = Harness(self)
        d = h.controllerModule.bus._call(("ctl", "evse_manager"), "pause_charging", None)  # type: ignore[arg-type]
        h.settle()
        self.assertEqual(self.successResultOf(d), True)

    def test_absentOptionalChannels(self) -> None:
        optional = tuple(c.name for c in CHANNELS if not c.required)
        h = Harness(self, absent=optional)
        for channel in CHANNELS:
            if channel.required:
                continue
            for command in channel.commands:
                args = {arg.name: SAMPLES[arg.codec] for arg in command.args}
                d = h.consumer.call(channel.name, command.name, args)
                h.settle()
                self.assertIsNot(command.absent, REQUIRED)
                self.assertEqual(self.successResultOf(d), command.absent, command.name)
        self.assertEqual(h.received, [])

    def test_absentAnswersHaveTheResultType(self) -> None:
        """
        null is no answer for a command with a result: a manager that
        validates schemas refuses it (the real types are checked against the
        real manager's in tests.test_everest_real).
        """
        for channel in CHANNELS:
            for command in channel.commands:
                if command.absent is REQUIRED:
                    continue
                label = f"{channel.name}.{command.name}"
                if command.result is Codec.NIL:
                    self.assertIsNone(command.absent, label)
                else:
                    self.assertIsNotNone(command.absent, label)
                    self.assertEqual(
                        command.result.decode(command.result.encode(command.absent)),
                        command.absent,
                        label,
                    )

    def test_nullAnswerOfTheSatellite(self) -> None:
        """
        A satellite answering null (a C++ agent, for a channel its board
        does not connect) gets the table's absent answer on the main board;
        a required channel's null is an error.
        """
        h = Harness(self)
        for name, command in (("display_message", "get_display_messages"),
                              ("system", "upload_logs"),
                              ("evse_manager", "get_evse")):  # fmt: skip
            h.devices[name].provideCommand("main", command, lambda args: None)
        d = h.consumer.call("display_message", "get_display_messages", {"request": {}})
        h.settle()
        self.assertEqual(self.successResultOf(d), {"messages": []})
        d = h.consumer.call("system", "upload_logs", {"upload_logs_request": {}})
        h.settle()
        self.assertEqual(self.successResultOf(d), {"upload_logs_status": "Rejected"})
        d = h.consumer.call("evse_manager", "get_evse", {})
        h.settle()
        error = self.failureResultOf(d, CommandError).value
        self.assertEqual(error.kind, "HandlerException")
        self.assertIn("answered null", error.message)

    def test_absentRequiredChannelFails(self) -> None:
        h = Harness(self, absent=("energy",))
        d = h.consumer.call("energy", "enforce_limits", {"value": {}})
        h.settle()
        error = self.failureResultOf(d, CommandError).value
        self.assertEqual(error.kind, "HandlerException")
        self.assertIn("energy is not connected", error.message)

    def test_satelliteFailureIsAHandlerException(self) -> None:
        h = Harness(self)

        def fail(args: dict[str, Any]) -> Any:
            raise ValueError("relay stuck")

        h.devices["evse_manager"].provideCommand("main", "force_unlock", fail)
        d = h.consumer.call("evse_manager", "force_unlock", {"connector_id": 1})
        h.settle()
        error = self.failureResultOf(d, CommandError).value
        self.assertEqual(error.kind, "HandlerException")
        self.assertIn("relay stuck", error.message)

    def test_missingArgument(self) -> None:
        h = Harness(self)
        d = h.consumer.call("evse_manager", "reserve", {})
        h.settle()
        self.assertEqual(self.failureResultOf(d, CommandError).value.kind, "SchemaValidationError")

    def test_agentRejectsBadWireArguments(self) -> None:
        h = Harness(self)
        d = h.client.call("evse_manager_enable_disable", "1", "{}")
        h.settle()
        self.assertIn("bad argument", str(self.failureResultOf(d).value))
        d = h.client.call("evse_manager_stop_transaction", "{not json")
        h.settle()
        self.assertIn("not JSON", str(self.failureResultOf(d).value))


class VarTests(SynchronousTestCase):
    def test_everyVar(self) -> None:
        h = Harness(self)
        seen: list[tuple[str, str, Any]] = []

        def recorder(channel: str, var: str) -> Callable[[Any], None]:
            return lambda value: seen.append((channel, var, value))

        for channel in CHANNELS:
            for var in channel.vars:
                h.consumer.subscribeVar(channel.name, var.name, recorder(channel.name, var.name))
        expected = []
        for channel in CHANNELS:
            for var in channel.vars:
                value = {"channel": channel.name, "var": var.name, "n": 1.5}
                if channel.name == "rfid_token_provider":
                    value = {"id_token": {"value": "AB", "type": "ISO14443"}, "connectors": [5]}
                h.devices[channel.name].publishVar("main", var.name, value)
                h.settle()
                while h.poll():
                    pass
                expected.append((channel.name, var.name, value))
        self.assertEqual(seen, expected)

    def test_hlcSessionFailedIsForwarded(self) -> None:
        h = Harness(self)
        seen: list[Any] = []
        h.consumer.subscribeVar("evse_manager", "hlc_session_failed", seen.append)
        h.devices["evse_manager"].publishVar(
            "main", "hlc_session_failed", {"uuid": "u", "reason": "x"}
        )
        h.settle()
        h.poll()
        self.assertEqual(seen, [{"uuid": "u", "reason": "x"}])

    def test_rfidTokenGetsTheConnector(self) -> None:
        h = Harness(self)
        seen: list[Any] = []
        h.consumer.subscribeVar("rfid_token_provider", "provided_token", seen.append)
        token = {"id_token": {"value": "AB", "type": "ISO14443"}, "authorization_type": "RFID"}
        h.devices["rfid_token_provider"].publishVar("main", "provided_token", token)
        h.settle()
        h.poll()
        self.assertEqual(seen, [{**token, "connectors": [2]}])

    def test_otherTokensAreUntouched(self) -> None:
        h = Harness(self)
        seen: list[Any] = []
        h.consumer.subscribeVar("auth_token_provider", "provided_token", seen.append)
        token = {"id_token": {"value": "AB", "type": "ISO14443"}, "authorization_type": "RFID"}
        h.devices["auth_token_provider"].publishVar("main", "provided_token", token)
        h.settle()
        h.poll()
        self.assertEqual(seen, [token])

    def test_measurementsCoalesceEventsDoNot(self) -> None:
        h = Harness(self)
        power: list[Any] = []
        events: list[Any] = []
        h.consumer.subscribeVar("evse_manager", "powermeter", power.append)
        h.consumer.subscribeVar("evse_manager", "session_event", events.append)
        for i in range(3):
            h.devices["evse_manager"].publishVar("main", "powermeter", {"n": i})
            h.devices["evse_manager"].publishVar("main", "session_event", {"event": i})
        h.settle()
        h.poll()
        self.assertEqual(power, [{"n": 2}])
        self.assertEqual(events, [{"event": 0}, {"event": 1}, {"event": 2}])
        self.assertEqual(h.queue.coalesced, 2)

    def test_unknownVarsIgnored(self) -> None:
        h = Harness(self)
        count = h.controller.deliver(
            json.dumps({"errors": [], "vars": [{"interface": "nope", "var": "x", "value": 1}]})
        )
        self.assertEqual(count, 1)

    def test_badBatch(self) -> None:
        h = Harness(self)
        for batch in ("[]", "{", '{"vars": 5}', "null"):
            self.assertRaises(ValueError, h.controller.deliver, batch)


class ErrorTests(SynchronousTestCase):
    def test_raiseAndClearExactly(self) -> None:
        h = Harness(self)
        one = makeError("evse_board_support/MREC2GroundFailure", "bsp", "board", subType="A")
        two = makeError("evse_board_support/MREC2GroundFailure", "bsp", "board", subType="B")
        h.agentModule.raiseError("x", one)
        h.agentModule.raiseError("x", two)
        h.settle()
        h.poll()
        self.assertEqual([e["sub_type"] for e in h.mainErrors], ["A", "B"])
        self.assertEqual(len(h.controller.activeErrors), 2)
        h.agentModule.clearError("x", two)
        h.settle()
        h.poll()
        cleared = h.mainErrors[-1]
        self.assertEqual(cleared["state"], "ClearedByModule")
        self.assertEqual((cleared["sub_type"], cleared["origin"]), ("B", two["origin"]))
        self.assertEqual([e["sub_type"] for e in h.controller.activeErrors], ["A"])

    def test_orderOfVarsAndErrorsIsKept(self) -> None:
        h = Harness(self)
        log: list[str] = []
        h.consumer.subscribeVar("evse_manager", "session_event", lambda v: log.append(v["event"]))
        h.consumer.subscribeAllErrors(lambda e: log.append(e["state"]))
        device = h.devices["evse_manager"]
        error = makeError("evse_manager/Internal", "dev", "main")
        device.publishVar("main", "session_event", {"event": "one"})
        h.settle()
        device.raiseError("main", error)
        h.settle()
        device.publishVar("main", "session_event", {"event": "two"})
        h.settle()
        while h.poll():
            pass
        self.assertEqual(log, ["one", "Active", "two"])


class PushTests(SynchronousTestCase):
    def test_pushVar(self) -> None:
        h = Harness(self)
        seen: list[tuple[str, Any]] = []
        h.satelliteSubscriber.subscribeVar(
            "auth", "token_validation_status", lambda v: seen.append(("auth", v))
        )
        h.satelliteSubscriber.subscribeVar(
            "system", "log_status", lambda v: seen.append(("system", v))
        )
        h.mainAuth.publishVar("main", "token_validation_status", {"status": "Accepted"})
        h.mainSystem.publishVar("main", "log_status", {"log_status": "Uploading", "request_id": 3})
        h.settle()
        self.assertEqual(
            seen,
            [
                ("auth", {"status": "Accepted"}),
                ("system", {"log_status": "Uploading", "request_id": 3}),
            ],
        )

    def test_pushVarGarbage(self) -> None:
        h = Harness(self)
        d = h.client.call("push_var", "not json")
        h.settle()
        self.assertIn("push_var", str(self.failureResultOf(d).value))
        d = h.client.call("push_var", json.dumps({"interface": "x", "var": "y", "value": 1}))
        h.settle()
        self.assertIsNone(self.successResultOf(d))

    def test_agentAuthAndSystemAnswer(self) -> None:
        h = Harness(self)
        d = h.satelliteSubscriber.call("system", "is_reset_allowed", {"type": "Soft"})
        h.settle()
        self.assertIs(self.successResultOf(d), False)


class QueueTests(SynchronousTestCase):
    def test_longPoll(self) -> None:
        clock = Clock()
        queue = EventQueue(clock, lambda: None, holdTime=1.0)
        d = queue.retrieve()
        self.assertNoResult(d)
        clock.advance(0.5)
        queue.addVar("evse_manager", "ready", True)
        self.assertNoResult(d)
        clock.advance(0)
        batch = json.loads(self.successResultOf(d))
        self.assertEqual(
            batch["vars"], [{"interface": "evse_manager", "var": "ready", "value": True}]
        )

    def test_noEventIsLostBetweenPolls(self) -> None:
        # An event answers a held poll early; the hold timer of that poll
        # must not fire later and take events that no poll is waiting for.
        clock = Clock()
        queue = EventQueue(clock, lambda: None, holdTime=1.0)
        first = queue.retrieve()
        queue.addVar("evse_manager", "session_event", "one")
        clock.advance(0)
        self.assertIn("one", self.successResultOf(first))
        queue.addVar("evse_manager", "session_event", "two")
        clock.advance(2.0)
        self.assertIn("two", self.successResultOf(queue.retrieve()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_idlePollIsHeld(self) -> None:
        clock = Clock()
        queue = EventQueue(clock, lambda: None, holdTime=1.0)
        d = queue.retrieve()
        clock.advance(0.99)
        self.assertNoResult(d)
        clock.advance(0.01)
        self.assertEqual(json.loads(self.successResultOf(d)), {"errors": [], "vars": []})

    def test_overflow(self) -> None:
        clock = Clock()
        overflows: list[None] = []
        queue = EventQueue(clock, lambda: overflows.append(None), limit=3)
        for i in range(5):
            queue.addVar("evse_manager", "session_event", i)
        self.assertEqual((len(queue), len(overflows)), (3, 1))

    def test_compactSortedJson(self) -> None:
        clock = Clock()
        queue = EventQueue(clock, lambda: None)
        queue.addVar("energy", "energy_flow_request", {"b": 1, "a": 11000.0})
        text = self.successResultOf(queue.retrieve())
        self.assertEqual(
            text,
            '{"errors":[],"vars":[{"interface":"energy","value":{"a":11000.0,"b":1},'
            '"var":"energy_flow_request"}]}',
        )

    def test_closeAnswersTheWaitingPoll(self) -> None:
        clock = Clock()
        queue = EventQueue(clock, lambda: None)
        d = queue.retrieve()
        queue.close()
        self.assertEqual(json.loads(self.successResultOf(d)), {"errors": [], "vars": []})
        queue.addVar("evse_manager", "ready", True)
        self.assertEqual(len(queue), 0)
