# The twistd dropin for rcp. Every `twistd --help` imports this file, so it
# declares the two commands and nothing else: ServiceMaker imports the tap
# modules only when their command runs.
from twisted.application.service import ServiceMaker

rcpAgent = ServiceMaker(
    "rcp agent",
    "rcp.agent.tap",
    "Satellite side of the rcp link: serves the board's EVerest interfaces to the main board.",
    "rcp-agent",
)

rcpController = ServiceMaker(
    "rcp controller",
    "rcp.controller.tap",
    "Main-board side of the rcp link: connects to one satellite's agent.",
    "rcp-controller",
)
