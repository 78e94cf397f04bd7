"""The fleet: which module runs what (the registry, fed by the modules' requests) and staged rollouts
(their records, the cohorts, what modules report, the operator's controls, the server's decisions, the pure
policy). Uses the store; imports nothing from the faces."""
