"""
The station's SystemAggregator module (C{etc/everest/modules/SystemAggregator}):
one C{system} for the whole station, over the main board's own System and
every satellite's.

  - L{topology}: the boards, matched by module id and checked at start;
  - L{firmware}, L{logs}, L{archive}, L{fanout}: the policy's parts, pure
    and clock-driven;
  - L{ports}: what the policy needs from outside (receivers, transfers);
  - L{module}: L{module.SystemAggregator}, the policy on an EVerest module;
  - L{settings}: its module config.
"""
