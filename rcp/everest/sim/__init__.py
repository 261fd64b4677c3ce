"""A simulated EVerest, in memory: one bus per board and simulated modules."""
