"""Training orchestration: manifest -> splits -> tiles -> tile CNN -> features -> MIL -> bundle.

Entry points live in :mod:`histo_net.train.run` (``run_training``, ``evaluate_bundle``);
nothing is imported here so ``histo_net.train.config`` stays cheap to import.
"""
