"""The ``switchboard`` command line: the composition root that wires producers and consumers."""
