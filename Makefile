# Developer shortcuts. `make test` is the README's test command.

.PHONY: dev lint test fmt

dev:
	CARGO_TARGET_DIR=target/maturin pip install -e '.[test]'

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
