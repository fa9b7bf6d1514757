# Sourced by the scripts: where installs and builds are cached, outside the clone, so a second
# run (and CI on the same machine) reuses them.
export NETMETER_CACHE="${NETMETER_CACHE:-$HOME/.cache/netmeter}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$NETMETER_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
