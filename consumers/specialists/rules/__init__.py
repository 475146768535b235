"""Offline rule tables, one module per specialist, plus the figures the rules compute from."""
