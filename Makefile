# vild_d2 entry points. Each installs first if needed (tools/install.py: ./.venv, or the
# interpreter named by VILD_PYTHON).
PY := $(if $(VILD_PYTHON),$(VILD_PYTHON),.venv/bin/python)

.PHONY: install demo test

install:
	python3 tools/install.py

demo: install
	$(PY) tools/run_world_pipeline.py $(ARGS)

test: install
	$(PY) -m pytest tests $(ARGS)
