# Both entry points install what they need first: uv (from PyPI), then the locked environment.
UV := python3 -m uv

.PHONY: demo test lint bench bootstrap

bootstrap:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet

demo: bootstrap
	$(UV) run recon up --demo

test: bootstrap
	$(UV) run pytest

lint: bootstrap
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

# Benchmarks (docs/performance.md); pass options with ARGS, e.g. make bench ARGS=--quick
bench: bootstrap
	$(UV) run python -m benchmarks $(ARGS)
