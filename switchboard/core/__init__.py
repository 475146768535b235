"""The kernel: settings, topic and header names, Kafka client wrappers, serde, the error
taxonomy and its classification, the retry policy and metrics.

It imports nothing of ``producers``, ``consumers``, the CLI or the dev tools: everything else
is built on it (``tests/unit/test_boundaries.py`` holds that).
"""
