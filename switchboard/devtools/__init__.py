"""Development tools: the local Kafka broker and the loopback fake Anthropic server.

Only the CLI (``switchboard kafka ...``, ``switchboard fake-anthropic``) and the tests import
them; the pipeline never does.
"""
