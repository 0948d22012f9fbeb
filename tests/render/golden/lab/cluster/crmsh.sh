#!/bin/bash
# Managed by hakvm: the cluster 'lab' configuration as crmsh (4.x)
# commands (the same as hakvm's cib.xml). Usage: $0 [CIB_FILE]: with a file, edit it
# offline; without, change the live cluster. Creates no node entries, authenticates
# no host and holds no password (fence devices use password_script).
set -euo pipefail

WAIT=(-w)  # live: wait for the cluster to finish the transition
if [ $# -ge 1 ]; then export CIB_file="$1"; WAIT=(); fi
# One transaction: nothing reaches the cluster before 'commit'.
crm "${WAIT[@]}" configure <<'EOF'
property cib-bootstrap-options: stonith-enabled=true stonith-timeout=150s stonith-action=reboot no-quorum-policy=stop cluster-recheck-interval=5min load-threshold=2000% node-action-limit=6
rsc_defaults rsc-options: resource-stickiness=200 migration-threshold=3
op_defaults op-options: timeout=60s
primitive node01_fence stonith:fence_ipmilan \
    params ip=10.0.2.2 ipport=6230 username=hakvm lanplus=1 password_script=/etc/hakvm/fence/node01.password.sh pcmk_host_list=node01 pcmk_host_check=static-list power_wait=0 pcmk_delay_base=node01:45s \
    op monitor interval=300s timeout=120s \
    op start interval=0s timeout=120s \
    op stop interval=0s timeout=120s
primitive node02_fence stonith:fence_ipmilan \
    params ip=10.0.2.2 ipport=6231 username=hakvm lanplus=1 password_script=/etc/hakvm/fence/node02.password.sh pcmk_host_list=node02 pcmk_host_check=static-list power_wait=0 \
    op monitor interval=300s timeout=120s \
    op start interval=0s timeout=120s \
    op stop interval=0s timeout=120s
primitive vm-a_drbd ocf:linbit:drbd \
    params drbd_resource=vm-a \
    op monitor interval=59s timeout=120s role=Promoted \
    op monitor interval=61s timeout=120s role=Unpromoted \
    op start interval=0s timeout=240s \
    op stop interval=0s timeout=100s \
    op promote interval=0s timeout=90s \
    op demote interval=0s timeout=90s \
    op notify interval=0s timeout=90s
clone vm-a_drbd_clone vm-a_drbd \
    meta promotable=true promoted-max=2 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
primitive vm-a ocf:heartbeat:VirtualDomain \
    params config=/etc/hakvm/domains/vm-a.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false force_stop=true \
    meta target-role=Started allow-migrate=true \
    op monitor interval=60s timeout=120s \
    op start interval=0s timeout=300s \
    op stop interval=0s timeout=120s \
    op migrate_to interval=0s timeout=300s \
    op migrate_from interval=0s timeout=300s
primitive vm-b_drbd ocf:linbit:drbd \
    params drbd_resource=vm-b \
    op monitor interval=59s timeout=120s role=Promoted \
    op monitor interval=61s timeout=120s role=Unpromoted \
    op start interval=0s timeout=240s \
    op stop interval=0s timeout=100s \
    op promote interval=0s timeout=90s \
    op demote interval=0s timeout=90s \
    op notify interval=0s timeout=90s
clone vm-b_drbd_clone vm-b_drbd \
    meta promotable=true promoted-max=2 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
primitive vm-b ocf:heartbeat:VirtualDomain \
    params config=/etc/hakvm/domains/vm-b.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false force_stop=true \
    meta target-role=Started allow-migrate=true \
    op monitor interval=60s timeout=120s \
    op start interval=0s timeout=300s \
    op stop interval=0s timeout=120s \
    op migrate_to interval=0s timeout=300s \
    op migrate_from interval=0s timeout=300s
location node01_fence_avoids_node01 node01_fence -inf: node01
location node02_fence_avoids_node02 node02_fence -inf: node02
colocation vm-a_with_drbd inf: vm-a vm-a_drbd_clone:Promoted
order vm-a_after_drbd Mandatory: vm-a_drbd_clone:promote vm-a:start
location vm-a_needs_good_data vm-a rule -inf: not_defined master-vm-a_drbd or master-vm-a_drbd number:lt 1000 or defined hakvm-resyncing-vm-a
location vm-a_prefers_node01 vm-a 100: node01
colocation vm-b_with_drbd inf: vm-b vm-b_drbd_clone:Promoted
order vm-b_after_drbd Mandatory: vm-b_drbd_clone:promote vm-b:start
location vm-b_needs_good_data vm-b rule -inf: not_defined master-vm-b_drbd or master-vm-b_drbd number:lt 1000 or defined hakvm-resyncing-vm-b
location vm-b_prefers_node02 vm-b 100: node02
alert hakvm-events /usr/local/lib/hakvm/alert-agent meta timeout=120s to /var/log/hakvm/events/events.jsonl
commit
EOF
