"""
EVerest over MQTT: rcp's processes as standalone modules of a real EVerest.

- L{connection}: one paho-mqtt client driven by the Twisted reactor
  (paho's external-loop API; no paho thread);
- L{wire}: the framework's topics and messages;
- L{module}: L{MqttModule}, an L{rcp.everest.interface.IEverestModule}
  speaking the framework's protocol to the manager and the other modules.
"""

from .connection import IMqttReactor, MqttConnection, MqttMessage, NotConnected
from .module import MqttModule
from .wire import ModuleConfig, Topics

__all__ = [
    "IMqttReactor",
    "ModuleConfig",
    "MqttConnection",
    "MqttMessage",
    "MqttModule",
    "NotConnected",
    "Topics",
]
