# Switchboard's everyday commands. `make demo` and `make test` each do their own set-up.
PYTHON ?= python3
STAMP := .switchboard/.installed

.PHONY: install demo test lint bench kafka-start kafka-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install -q -e '.[dev]'
	@mkdir -p .switchboard && touch $(STAMP)

install: $(STAMP)

demo: install  ## the main job: local Kafka, router, five specialists, example answers
	switchboard demo

test: install  ## the whole suite; starts a local broker if none is given, stops it after
	$(PYTHON) -m pytest -q

lint: install
	ruff check . && ruff format --check . && mypy

bench: install  ## benchmarks (never part of the test suite)
	$(PYTHON) -m pip install -q -e ".[bench]"
	$(PYTHON) -m benchmarks

kafka-start: install
	switchboard kafka start

kafka-stop:
	switchboard kafka stop

clean: kafka-stop
	rm -rf .switchboard
