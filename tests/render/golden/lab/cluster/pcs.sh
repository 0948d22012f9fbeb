#!/bin/bash
# Managed by hakvm: the cluster 'lab' configuration as pcs (0.10/0.11)
# commands (the same as hakvm's cib.xml). Usage: $0 [CIB_FILE]: with a file, edit it
# offline; without, change the live cluster. Creates no node entries, authenticates
# no host and holds no password (fence devices use password_script).
set -euo pipefail

if [ $# -ge 1 ]; then CIB="$1"; PUSH=0
else CIB=$(mktemp); trap 'rm -f "$CIB"' EXIT; pcs cluster cib > "$CIB"; PUSH=1
fi

# Cluster properties and defaults
pcs -f "$CIB" property set stonith-enabled=true stonith-timeout=150s stonith-action=reboot no-quorum-policy=stop cluster-recheck-interval=5min load-threshold=2000% node-action-limit=6
pcs -f "$CIB" resource defaults update resource-stickiness=200 migration-threshold=3
pcs -f "$CIB" resource op defaults update timeout=60s

# Fence devices: one per node, never run by the node it fences
pcs -f "$CIB" stonith create node01_fence fence_ipmilan \
    ip=10.0.2.2 ipport=6230 username=hakvm lanplus=1 password_script=/etc/hakvm/fence/node01.password.sh pcmk_host_list=node01 pcmk_host_check=static-list power_wait=0 pcmk_delay_base=node01:45s \
    op monitor interval=300s timeout=120s start interval=0s timeout=120s stop interval=0s timeout=120s
pcs -f "$CIB" stonith create node02_fence fence_ipmilan \
    ip=10.0.2.2 ipport=6231 username=hakvm lanplus=1 password_script=/etc/hakvm/fence/node02.password.sh pcmk_host_list=node02 pcmk_host_check=static-list power_wait=0 \
    op monitor interval=300s timeout=120s start interval=0s timeout=120s stop interval=0s timeout=120s

# Resources
pcs -f "$CIB" resource create vm-a_drbd ocf:linbit:drbd --no-default-ops \
    drbd_resource=vm-a \
    op monitor interval=59s timeout=120s role=Promoted monitor interval=61s timeout=120s role=Unpromoted start interval=0s timeout=240s stop interval=0s timeout=100s promote interval=0s timeout=90s demote interval=0s timeout=90s notify interval=0s timeout=90s
pcs -f "$CIB" resource promotable vm-a_drbd vm-a_drbd_clone promoted-max=2 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
pcs -f "$CIB" resource create vm-a ocf:heartbeat:VirtualDomain --no-default-ops \
    config=/etc/hakvm/domains/vm-a.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false force_stop=true \
    meta target-role=Started allow-migrate=true \
    op monitor interval=60s timeout=120s start interval=0s timeout=300s stop interval=0s timeout=120s migrate_to interval=0s timeout=300s migrate_from interval=0s timeout=300s
pcs -f "$CIB" resource create vm-b_drbd ocf:linbit:drbd --no-default-ops \
    drbd_resource=vm-b \
    op monitor interval=59s timeout=120s role=Promoted monitor interval=61s timeout=120s role=Unpromoted start interval=0s timeout=240s stop interval=0s timeout=100s promote interval=0s timeout=90s demote interval=0s timeout=90s notify interval=0s timeout=90s
pcs -f "$CIB" resource promotable vm-b_drbd vm-b_drbd_clone promoted-max=2 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
pcs -f "$CIB" resource create vm-b ocf:heartbeat:VirtualDomain --no-default-ops \
    config=/etc/hakvm/domains/vm-b.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false force_stop=true \
    meta target-role=Started allow-migrate=true \
    op monitor interval=60s timeout=120s start interval=0s timeout=300s stop interval=0s timeout=120s migrate_to interval=0s timeout=300s migrate_from interval=0s timeout=300s

# Constraints
pcs -f "$CIB" constraint location add node01_fence_avoids_node01 node01_fence node01 -- -INFINITY
pcs -f "$CIB" constraint location add node02_fence_avoids_node02 node02_fence node02 -- -INFINITY
pcs -f "$CIB" constraint colocation add vm-a with Promoted vm-a_drbd_clone INFINITY id=vm-a_with_drbd
pcs -f "$CIB" constraint order promote vm-a_drbd_clone then start vm-a kind=Mandatory id=vm-a_after_drbd
pcs -f "$CIB" constraint location vm-a rule constraint-id=vm-a_needs_good_data score=-INFINITY not_defined master-vm-a_drbd or master-vm-a_drbd lt number 1000 or defined hakvm-resyncing-vm-a
pcs -f "$CIB" constraint location add vm-a_prefers_node01 vm-a node01 -- 100
pcs -f "$CIB" constraint colocation add vm-b with Promoted vm-b_drbd_clone INFINITY id=vm-b_with_drbd
pcs -f "$CIB" constraint order promote vm-b_drbd_clone then start vm-b kind=Mandatory id=vm-b_after_drbd
pcs -f "$CIB" constraint location vm-b rule constraint-id=vm-b_needs_good_data score=-INFINITY not_defined master-vm-b_drbd or master-vm-b_drbd lt number 1000 or defined hakvm-resyncing-vm-b
pcs -f "$CIB" constraint location add vm-b_prefers_node02 vm-b node02 -- 100

# Alerts: hakvm's agent records every cluster event on each node
pcs -f "$CIB" alert create id=hakvm-events path=/usr/local/lib/hakvm/alert-agent meta timeout=120s
pcs -f "$CIB" alert recipient add hakvm-events id=hakvm-events-file value=/var/log/hakvm/events/events.jsonl

if [ "$PUSH" = 1 ]; then pcs cluster cib-push "$CIB" --config; fi
