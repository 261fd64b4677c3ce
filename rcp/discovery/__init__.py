"""
Discovery of satellites by board serial number (DNS-SD over mDNS).

An agent advertises its link as a service of type L{SERVICE_TYPE}; a
controller configured with a serial number instead of an address finds the
agent's current address before every connection attempt.  Discovery is a
hint only: who answers is still proven by mutual TLS.

  - L{records}: the service's name and TXT records, built and parsed
    (pure; everything read from the network is untrusted);
  - L{serial}: where a board's serial number comes from;
  - L{mdns}: the python-zeroconf side, bridged into the reactor;
  - L{endpoint}: a client endpoint that connects to where a serial number
    was last seen.
"""

from .records import SERVICE_TYPE, Advert, AdvertError

__all__ = ["SERVICE_TYPE", "Advert", "AdvertError"]
