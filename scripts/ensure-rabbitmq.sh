#!/usr/bin/env bash
# The RabbitMQ broker tests start Debian's rabbitmq-server themselves, on free ports (tests/support/rabbitmq.py).
set -euo pipefail
if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
# policy-rc.d: install the package without starting a system-wide node the tests do not use.
CREATED=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    echo 'exit 101' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    CREATED=1
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends rabbitmq-server
if [ -n "$CREATED" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
