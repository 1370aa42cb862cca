"""Long-running fault and load tests (``python -m stress [--quick]``); see docs/durability.rst."""
