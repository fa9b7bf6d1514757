# Sourced by the scripts: where installs and builds are cached, outside the clone, so a second
# run (and CI on the same machine) reuses them.
export NETMETER_CACHE="${NETMETER_CACHE:-$HOME/.cache/netmeter}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$NETMETER_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The cloud providers' IP range files, beside the checkout unless NETMETER_CLOUD_RANGES_DIR says
# otherwise; the attributor, its tests and the demo need them.
export NETMETER_CLOUD_RANGES_DIR="${NETMETER_CLOUD_RANGES_DIR:-$PWD/../shared/data/cloud-ip-ranges}"
require_cloud_ranges() {
  if [ ! -f "$NETMETER_CLOUD_RANGES_DIR/aws-ip-ranges.json" ]; then
    echo "cloud IP range files not found in $NETMETER_CLOUD_RANGES_DIR: put aws-ip-ranges.json," \
      "gcp-cloud.json and azure-service-tags.json there or set NETMETER_CLOUD_RANGES_DIR" >&2
    exit 1
  fi
}
