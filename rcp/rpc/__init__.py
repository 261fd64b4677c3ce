"""msgpack-rpc on Twisted, wire-compatible with rpclib."""

from .methods import Handler, Method, MethodRegistry
from .protocol import (
    CallTimeout,
    EncodeError,
    HandlerError,
    NotConnected,
    RemoteError,
    RpcError,
    RpcFactory,
    RpcLimits,
    RpcProtocol,
)

__all__ = [
    "CallTimeout",
    "EncodeError",
    "Handler",
    "HandlerError",
    "Method",
    "MethodRegistry",
    "NotConnected",
    "RemoteError",
    "RpcError",
    "RpcFactory",
    "RpcLimits",
    "RpcProtocol",
]
