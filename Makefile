# smss — the one place the project's commands live. See README.md.
CARGO ?= cargo
CONFIG ?= config/config.yaml
SLAVE_CONFIG ?= config/slave.yaml
MASTER ?= 127.0.0.1:12301

.PHONY: build release run-master run-slave test lint fmt clean

build:
	$(CARGO) build --release

release: build

# Runs the server in the foreground with config/config.yaml (data in ./data).
run-master: build
	./target/release/smss --config $(CONFIG) --role master

# Runs a slave of $(MASTER) with config/slave.yaml (data in ./data/slave).
run-slave: build
	./target/release/smss --config $(SLAVE_CONFIG) --role slave --master $(MASTER)

# The one test command: unit tests and integration tests against the real binary.
test:
	$(CARGO) test

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
