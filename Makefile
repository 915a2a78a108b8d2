# smss — the one place the project's commands live. See README.md.
CARGO ?= cargo
CONFIG ?= config/config.yaml
SLAVE_CONFIG ?= config/slave.yaml
MASTER ?= 127.0.0.1:12301

.PHONY: build release run-master run-slave test lint fmt clean bench bench-peers deb

build:
	$(CARGO) build --release

release: build

# Runs the server in the foreground with config/config.yaml (data in ./data).
run-master: build
	./target/release/smss --config $(CONFIG) --role master

# Runs a slave of $(MASTER) (by default the `make run-master` of this machine) with
# config/slave.yaml: it listens on 127.0.0.1:12302, data in ./data/slave.
run-slave: build
	./target/release/smss --config $(SLAVE_CONFIG) --role slave --master $(MASTER)

# The one test command: unit tests and integration tests against the real binary;
# then the build without the `tls` feature and its own test (TLS keys refused).
test:
	$(CARGO) test
	$(CARGO) test --no-default-features --test tls_off

# Benchmarks (not part of `make test`): starts its own smss with a temp data dir,
# fsync always then interval, then master+slave pairs for the replication rows
# (each server on its own port and temp dir), and prints tables.
# See src/bin/smss-bench/main.rs.
bench: build
	./target/release/smss-bench matrix

# The same publish/drain rows against Redis 7 Streams and beanstalkd (installed
# with apt if missing), with smss ÷ peer ratios.
bench-peers: build
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)
	command -v beanstalkd >/dev/null || (apt-get update && apt-get install -y beanstalkd)
	./target/release/smss-bench peers

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean

# The Debian package target/deb/smss_<version>_<arch>.deb (dpkg-deb only):
# binaries in /usr/bin, config in /etc/smss, the unit, data in /var/lib/smss.
# Install it with: sudo apt install ./target/deb/smss_*.deb
deb: build
	sh config/deb/build.sh target/release target/deb
