"""
A simulated Auth module for the main board: it validates the tokens every
token provider presents against a list of accepted ids and hands each
authorization to an EVSE, as EVerest's Auth does with its plug-event
selection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ...untrusted import errorText
from ..interface import CommandError, IEverestModule

#: the implementation id of the manifest
MAIN: Final = "main"
#: requirement ids of the manifest
TOKEN_PROVIDER: Final = "token_provider"
EVSE_MANAGER: Final = "evse_manager"

#: EVerest Auth's default connection_timeout, seconds
DEFAULT_CONNECTION_TIMEOUT: Final = 10.0


@dataclass
class EvseView:
    """What Auth knows of one EVSE, from its session events."""

    index: int
    evseId: int
    #: a session waits for authorization
    waiting: bool = False
    #: a session is open
    session: bool = False
    #: the token authorized here whose transaction has not started yet
    authorized: dict[str, Any] | None = None
    #: the token of the running transaction
    transactionToken: dict[str, Any] | None = None


@dataclass
class _Pending:
    """An accepted token waiting for a car to be plugged in."""

    token: dict[str, Any]
    timer: IDelayedCall | None = field(default=None)


def tokenValue(token: Any) -> str | None:
    """The id of a ProvidedIdToken, or None when it has none."""
    if isinstance(token, dict):
        idToken = token.get("id_token")
        if isinstance(idToken, dict) and isinstance(idToken.get("value"), str):
            return str(idToken["value"])
    return None


class AuthSim:
    """
    The simulated C{auth} provider.

    @param module: requires C{token_provider} (several connections,
        auth_token_provider) and C{evse_manager} (several connections, the
        index is the EVSE), provides C{main} (interface auth).
    @param clock: the only source of time.
    @param acceptedTokens: the ids that are accepted; by default the
        module's C{accepted_tokens} configuration (a list, or a text of
        comma separated ids).
    @param connectionTimeout: seconds an accepted token waits for a car.
    """

    log = Logger()

    def __init__(
        self,
        module: IEverestModule,
        clock: IReactorTime,
        acceptedTokens: Iterable[str] | None = None,
        connectionTimeout: float = DEFAULT_CONNECTION_TIMEOUT,
    ) -> None:
        self.module = module
        self.clock = clock
        if acceptedTokens is None:
            configured = module.config().get("accepted_tokens", [])
            if isinstance(configured, str):
                configured = [t.strip() for t in configured.split(",") if t.strip()]
            acceptedTokens = [str(t) for t in configured]
        self.acceptedTokens: set[str] = set(acceptedTokens)
        self.connectionTimeout = connectionTimeout
        self.masterPassGroupId = ""
        #: one view per evse_manager connection, by index
        self.evses: list[EvseView] = [
            EvseView(index, index + 1) for index in range(module.connections(EVSE_MANAGER))
        ]
        self.pending: list[_Pending] = []
        self._started = False

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        """Subscribe to every provider and EVSE, offer the commands, signal ready."""
        if self._started:
            raise RuntimeError("AuthSim started twice")
        self._started = True
        for index in range(self.module.connections(TOKEN_PROVIDER)):
            self.module.subscribeVar(TOKEN_PROVIDER, "provided_token", self._tokenProvided, index)
        for view in self.evses:
            self.module.subscribeVar(
                EVSE_MANAGER, "session_event", self._sessionEventsOf(view), view.index
            )
        self.module.provideCommand(MAIN, "set_connection_timeout", self._setConnectionTimeout)
        self.module.provideCommand(MAIN, "set_master_pass_group_id", self._setMasterPassGroupId)
        self.module.provideCommand(MAIN, "withdraw_authorization", self._withdrawAuthorization)
        self.module.signalReady().addCallbacks(self._globallyReady, self._failed)

    def stop(self) -> None:
        """Forget every waiting token."""
        for pending in self.pending:
            if pending.timer is not None and pending.timer.active():
                pending.timer.cancel()
        self.pending.clear()

    def _globallyReady(self, _: object) -> None:
        # learn the EVSE ids, which tokens' "connectors" name
        for view in self.evses:
            d = self.module.call(EVSE_MANAGER, "get_evse", {}, view.index)
            d.addCallback(self._gotEvse, view).addErrback(self._failed)

    def _gotEvse(self, evse: Any, view: EvseView) -> None:
        if isinstance(evse, dict) and isinstance(evse.get("id"), int):
            view.evseId = evse["id"]

    def _failed(self, failure: Failure) -> None:
        if isinstance(failure.value, CommandError):
            if failure.value.kind == "Shutdown":
                return  # this board is going down: nothing to report
            # a command failed (a satellite's answer, a timeout): one line, no traceback
            self.log.warn(
                "{module}: a command failed: {error}",
                module=self.module.moduleId,
                error=errorText(failure.value),
            )
            return
        self.log.failure("{module}: failed", failure, module=self.module.moduleId)

    # -- what the EVSEs tell ----------------------------------------------------

    def _sessionEventsOf(self, view: EvseView) -> Callable[[Any], None]:
        return lambda event: self._sessionEvent(view, event)

    def _sessionEvent(self, view: EvseView, event: Any) -> None:
        if not isinstance(event, dict):
            return
        name = event.get("event")
        if name == "SessionStarted":
            view.session = True
        elif name == "AuthRequired":
            view.session = True
            view.waiting = True
            self._servePending(view)
        elif name == "Authorized":
            view.waiting = False
        elif name == "Deauthorized":
            view.authorized = None
        elif name == "TransactionStarted":
            view.waiting = False
            started = event.get("transaction_started")
            token = started.get("id_tag") if isinstance(started, dict) else None
            view.transactionToken = token if isinstance(token, dict) else view.authorized
            view.authorized = None
        elif name == "TransactionFinished":
            view.transactionToken = None
        elif name == "SessionFinished":
            view.session = view.waiting = False
            view.authorized = view.transactionToken = None

    # -- tokens -----------------------------------------------------------------

    def _tokenProvided(self, token: Any) -> None:
        value = tokenValue(token)
        if value is None:
            self.log.warn(
                "{module}: malformed token {token!r}", module=self.module.moduleId, token=token
            )
            return
        self._status(token, "Processing")
        stopping = self._transactionToStop(token, value)
        if stopping is not None:
            view, reason = stopping
            self._status(token, "UsedToStop")
            self.module.call(
                EVSE_MANAGER,
                "stop_transaction",
                {"request": {"reason": reason, "id_tag": token}},
                view.index,
            ).addErrback(self._failed)
            return
        accepted = value in self.acceptedTokens
        self._status(token, "Accepted" if accepted else "Rejected")
        target = self._selectEvse(token)
        if not accepted:
            if target is not None:
                self._authorize(target, token, "Invalid")
            return
        if target is not None:
            self._authorize(target, token, "Accepted")
            return
        pending = _Pending(token)
        pending.timer = self.clock.callLater(self.connectionTimeout, self._timedOut, pending)
        self.pending.append(pending)

    def _transactionToStop(self, token: dict[str, Any], value: str) -> tuple[EvseView, str] | None:
        for view in self._candidates(token):
            if view.transactionToken is not None and tokenValue(view.transactionToken) == value:
                return view, "Local"
        parent = tokenValue({"id_token": token.get("parent_id_token")})
        if self.masterPassGroupId and parent == self.masterPassGroupId:
            for view in self._candidates(token):
                if view.transactionToken is not None:
                    return view, "MasterPass"
        return None

    def _candidates(self, token: dict[str, Any]) -> list[EvseView]:
        connectors = token.get("connectors")
        if isinstance(connectors, list) and connectors:
            return [view for view in self.evses if view.evseId in connectors]
        return list(self.evses)

    def _selectEvse(self, token: dict[str, Any]) -> EvseView | None:
        for view in self._candidates(token):
            if view.waiting:
                return view
        return None

    def _authorize(self, view: EvseView, token: dict[str, Any], status: str) -> None:
        if status == "Accepted":
            view.waiting = False
            view.authorized = token
        self.module.call(
            EVSE_MANAGER,
            "authorize_response",
            {"provided_token": token, "validation_result": {"authorization_status": status}},
            view.index,
        ).addErrback(self._failed)

    def _servePending(self, view: EvseView) -> None:
        for pending in self.pending:
            if view in self._candidates(pending.token):
                self._dropPending(pending)
                self._authorize(view, pending.token, "Accepted")
                return

    def _timedOut(self, pending: _Pending) -> None:
        pending.timer = None
        self._dropPending(pending)
        self._status(pending.token, "TimedOut")

    def _dropPending(self, pending: _Pending) -> None:
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        pending.timer = None
        if pending in self.pending:
            self.pending.remove(pending)

    def _status(self, token: dict[str, Any], status: str) -> None:
        self.module.publishVar(MAIN, "token_validation_status", {"token": token, "status": status})

    # -- commands ---------------------------------------------------------------

    def _setConnectionTimeout(self, args: dict[str, Any]) -> None:
        timeout = args.get("connection_timeout")
        if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0:
            self.connectionTimeout = float(timeout)

    def _setMasterPassGroupId(self, args: dict[str, Any]) -> None:
        groupId = args.get("master_pass_group_id")
        if isinstance(groupId, str):
            self.masterPassGroupId = groupId

    def _withdrawAuthorization(self, args: dict[str, Any]) -> str:
        request = args.get("request")
        request = request if isinstance(request, dict) else {}
        evseId = request.get("evse_id")
        value = tokenValue({"id_token": request.get("id_token")})
        views = self.evses
        if evseId is not None:
            views = [view for view in self.evses if view.evseId == evseId]
            if not views:
                return "EvseNotFound"
        found = False
        for view in views:
            if view.authorized is not None and value in (None, tokenValue(view.authorized)):
                view.authorized = None
                found = True
                self.module.call(EVSE_MANAGER, "withdraw_authorization", {}, view.index).addErrback(
                    self._failed
                )
        if evseId is None:
            for pending in list(self.pending):
                if value in (None, tokenValue(pending.token)):
                    self._dropPending(pending)
                    self._status(pending.token, "Withdrawn")
                    found = True
        return "Accepted" if found else "AuthorizationNotFound"
