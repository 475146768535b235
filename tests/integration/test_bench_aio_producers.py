"""``python -m benchmarks.aio_producers`` runs against the real broker: every mode produces and
has acknowledged every record, and ``AIOProducer``'s refusal of headers (why it cannot carry
Switchboard's records) is what it reports. The speeds themselves are read in
``benchmarks/README.md``, never asserted here."""

from __future__ import annotations

from benchmarks.aio_producers import MODES, run


def test_every_mode_delivers_and_the_header_refusal_is_reported(
    kafka_config: dict[str, str],
) -> None:
    result = run(records=300, reps=1, config=kafka_config)
    assert set(result["modes"]) == set(MODES)
    for mode in result["modes"].values():
        assert mode["records_per_s"] > 0
        assert mode["cpu_us_per_record"] > 0
    assert "not supported" in result["aio_headers"].lower()
