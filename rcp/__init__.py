"""rcp: remote charge port, the satellite link of a distributed EVerest station."""

__version__ = "0.1.0"
