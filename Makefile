# The two entry points of the README. Both bootstrap first (system packages, .venv), so they
# work on a fresh Debian machine as root and in CI (`.ci/run`).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: bootstrap test lint unit demo lock clean

bootstrap:
	@scripts/bootstrap.sh

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Two processes, a test file each at a time: most end-to-end tests wait on real processes, so
# both cores stay busy (half the wall time of one process); a file's tests share its fixtures.
unit: bootstrap
	$(BIN)/pytest -n 2 --dist loadfile

test: lint unit

demo: bootstrap
	$(BIN)/autocanary demo

# Refresh the pinned versions after changing dependencies in pyproject.toml.
lock: bootstrap
	@{ echo "# Pinned versions the project is tested with; scripts/bootstrap.sh installs with -c constraints.txt."; \
	   echo "# Regenerate after changing dependencies: make lock"; \
	   $(BIN)/pip freeze --exclude-editable | grep -v '^autocanary'; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache *.egg-info
