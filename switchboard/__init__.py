"""Switchboard: an event-driven Kafka pipeline of specialist engineering workers."""

__version__ = "0.1.0"
