# Two commands for a newcomer: `make demo` and `make test`. Both install what is missing first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q

.PHONY: install demo test test-fast clean-demo

install:
	bash tools/install.sh

demo: install
	cd egs/mini12/asr1 && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash run.sh

test: install
	@if $(PY) -m pip show torchaudio >/dev/null 2>&1; then \
	  echo "ERROR: torchaudio is installed in $(VENV); it breaks transformers' audio imports on this CPU torch." >&2; \
	  echo "       Remove it: $(VENV)/bin/pip uninstall -y torchaudio" >&2; exit 1; fi
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS) test

# Unit tests only (no recipe smoke tests, no pretrained-weight integration tests).
test-fast: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS) -m "not slow and not integration" test

clean-demo:
	rm -rf egs/mini12/asr1/{data,dump,exp} egs/mini12/lre1/{data,dump,exp}
