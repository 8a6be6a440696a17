# The two commands of the README. Each creates .venv with the pinned dependencies when missing.
#   make reproduce   the main job: the whole reproduction into runs/reproduce
#                    (paper profile when CUDA is available, the CPU-sized quick profile otherwise);
#                    PROFILE=smoke|quick|paper runs that profile into its own runs/<profile>, so
#                    that `make reproduce PROFILE=smoke` then `make reproduce` never share a folder
#   make test        lint, format check, unit tests and every notebook (nbval) at test size
#   make notebooks   re-pair every notebook and re-execute it at full size (the committed outputs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= auto
ifeq ($(PROFILE),auto)
OUT    ?= runs/reproduce
else
OUT    ?= runs/$(PROFILE)
endif

.PHONY: reproduce test notebooks setup clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/python -m rulelib reproduce --profile $(PROFILE) --out $(OUT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	RULELIB_NOTEBOOK_SIZE=test $(BIN)/python -m pytest tests notebooks --nbval-lax \
		--nbval-current-env -p no:cacheprovider

notebooks: $(STAMP)
	$(BIN)/python tools/sync_notebooks.py

clean-venv:
	rm -rf $(VENV)
