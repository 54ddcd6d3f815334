# Developer shortcuts. `make test` is the README's test command.

.PHONY: dev lint test fmt docs

dev:
	CARGO_TARGET_DIR=target/maturin pip install -e '.[test,docs]'

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	ruff check python examples benchmarks
	ruff format --check python examples benchmarks

fmt:
	cargo fmt --all
	ruff format python examples benchmarks

test:
	bash .ci/run

docs:
	mkdocs build --strict
