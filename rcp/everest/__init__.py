"""
The EVerest side of an rcp process: one small interface, two implementations.

L{IEverestModule} is what the agent, the controller and the simulated
EVerest modules see of EVerest; L{rcp.everest.sim} implements it in memory
(one bus per board), the MQTT implementation speaks the framework's own
protocol to a real EVerest manager.
"""
