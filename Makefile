# Both entry points install what they need first: uv (from PyPI), then the locked environment.
UV := python3 -m uv

.PHONY: demo test lint bench bootstrap screenshots

# --compile-bytecode: every flow run is a new Python process that imports Prefect, pandas,
# SQLAlchemy and alpaca-py; without .pyc files (uv writes none by default, and
# PYTHONDONTWRITEBYTECODE keeps Python from caching them) each run compiles ≈ 900 modules
# again (docs/performance.md, trigger to event). compileall does the same for our packages.
bootstrap:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet --compile-bytecode
	@$(UV) run --frozen --no-sync python -m compileall -q recon flows api cli simulator >/dev/null

demo: bootstrap
	$(UV) run recon up --demo

test: bootstrap
	$(UV) run pytest

lint: bootstrap
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports

# Benchmarks (docs/performance.md); pass options with ARGS, e.g. make bench ARGS=--quick
bench: bootstrap
	$(UV) run python -m benchmarks $(ARGS)

# The console's screenshots in docs/console/ (docs/console.md), made by its browser tests.
screenshots: bootstrap
	RECON_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console $(UV) run pytest -q -p no:cacheprovider tests/console
