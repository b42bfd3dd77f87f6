# vild_d2 entry points. Each installs first if needed (tools/install.py: ./.venv, or the
# interpreter named by VILD_PYTHON).
PY := $(if $(VILD_PYTHON),$(VILD_PYTHON),.venv/bin/python)

.PHONY: install demo test app

install:
	python3 tools/install.py

demo: install
	$(PY) tools/run_world_pipeline.py $(ARGS)

# the tests cover the try-it page too, so they install its optional extra
test:
	python3 tools/install.py --extra app
	$(PY) -m pytest tests $(ARGS)

# the try-it page on http://127.0.0.1:7860 (ARGS: --model FOLDER ..., --port N)
app:
	python3 tools/install.py --extra app
	$(PY) demo/app.py $(ARGS)
