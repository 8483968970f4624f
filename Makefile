# OpsTwin: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test lint bench install

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)  ## run the main job (embedded default unless DATABASE_URL/REDIS_URL/MQTT_URL are set)
	$(PY) manage.py demo $(ARGS)

test: $(STAMP)  ## run the test suite
	$(VENV)/bin/pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)  ## every benchmark, one after the other
	for b in benchmarks/*.py; do case $$b in */_*) continue;; esac; $(PY) $$b || exit 1; done
