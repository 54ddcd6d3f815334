# Developer shortcuts. `make test` is CI (.ci/run): the README's test command and the checks.

.PHONY: dev lint test fmt docs

dev:
	CARGO_TARGET_DIR=target/maturin pip install -e '.[test,docs]'

# The checks of .ci/run, from the same script so they cannot drift (the stub check needs the
# module built: `make dev`).
lint:
	bash .ci/run lint

fmt:
	cargo fmt --all
	ruff format python examples benchmarks docs

test:
	bash .ci/run

docs:
	mkdocs build --strict
