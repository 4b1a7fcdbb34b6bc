# mmctx — the two commands of the README.
#   make demo : set up .venv, generate the default data if missing, train the default
#               experiment (multimodal classification) from the CLI and test its best
#               checkpoint, then the image-caption experiment, printing metrics, a few
#               generated captions and where logs, checkpoints and samples are.
#   make test : set up .venv with the dev extras and run the whole test suite.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
MMCTX   := $(VENV)/bin/mmctx
CONFIG  ?= configs/default.yaml
CAPTION_CONFIG ?= configs/caption_image.yaml

.PHONY: demo test install install-dev data clean

$(VENV)/.stamp-install: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torchaudio pins torch; the known-good set is in pyproject.toml (torch 2.9.1 etc.)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-install
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.stamp-install
install-dev: $(VENV)/.stamp-dev

data: install
	$(PY) -m mmctx.data.builtin.scenes

demo: data
	$(MMCTX) fit --config $(CONFIG)
	$(MMCTX) test --config $(CONFIG) --ckpt_path best
	$(MMCTX) fit --config $(CAPTION_CONFIG)
	$(MMCTX) test --config $(CAPTION_CONFIG) --ckpt_path best

test: install-dev
	$(PY) -m pytest -q

clean:
	rm -rf runs lightning_logs .pytest_cache
