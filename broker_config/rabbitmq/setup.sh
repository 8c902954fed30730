#!/bin/sh
# Once, on any node after the cluster has formed: the servers' account and the admin account
# that `vigie devices add/revoke` uses (VIGIE_RABBITMQ_API_URL). Passwords from the environment.
set -eu
: "${VIGIE_SERVER_PASSWORD:?}" "${VIGIE_ADMIN_PASSWORD:?}"
rabbitmqctl delete_user guest 2>/dev/null || true
# Devices' accounts are created by `vigie devices add` through the management API.
rabbitmqctl add_user vigie-admin "$VIGIE_ADMIN_PASSWORD"
rabbitmqctl set_user_tags vigie-admin administrator
rabbitmqctl set_permissions -p / vigie-admin '^$' '^$' '^$'
# Servers: declare and consume vigie.uplink and their own probe queue (amq.gen-…), publish
# downlinks and probes on amq.topic.
rabbitmqctl add_user vigie-server "$VIGIE_SERVER_PASSWORD"
rabbitmqctl set_permissions -p / vigie-server \
    '^(vigie\.uplink|amq\.gen-.*)$' '^(vigie\.uplink|amq\.gen-.*|amq\.topic)$' \
    '^(vigie\.uplink|amq\.gen-.*|amq\.topic)$'
rabbitmqctl set_topic_permissions -p / vigie-server amq.topic \
    '^vigie\.v1\.(dev\.[^.]+\.cmd|probe\..+)$' '^vigie\.v1\.(dev\.[^.]+\.[a-z]+|probe\..+)$'
