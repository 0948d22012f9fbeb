#!/bin/bash
# Managed by hakvm: the cluster 'seed' configuration as pcs (0.10/0.11)
# commands (the same as hakvm's cib.xml). Usage: $0 [CIB_FILE]: with a file, edit it
# offline; without, change the live cluster. Creates no node entries, authenticates
# no host and holds no password (fence devices use password_script).
set -euo pipefail

if [ $# -ge 1 ]; then CIB="$1"; PUSH=0
else CIB=$(mktemp); trap 'rm -f "$CIB"' EXIT; pcs cluster cib > "$CIB"; PUSH=1
fi

# Cluster properties and defaults
pcs -f "$CIB" property set stonith-enabled=true stonith-timeout=60s stonith-action=reboot no-quorum-policy=stop cluster-recheck-interval=5min
pcs -f "$CIB" resource defaults update resource-stickiness=200 migration-threshold=3
pcs -f "$CIB" resource op defaults update timeout=60s

# Fence devices: one per node, never run by the node it fences
pcs -f "$CIB" stonith create node01_fence fence_ipmilan \
    ip=10.0.30.11 ipport=623 username=fence lanplus=1 password_script=/etc/hakvm/fence/node01.password.sh pcmk_host_list=node01 pcmk_host_check=static-list pcmk_delay_base=node01:10s \
    op monitor interval=60s timeout=30s start interval=0s timeout=60s stop interval=0s timeout=60s
pcs -f "$CIB" stonith create node02_fence fence_ipmilan \
    ip=10.0.30.12 ipport=623 username=fence lanplus=1 password_script=/etc/hakvm/fence/node02.password.sh pcmk_host_list=node02 pcmk_host_check=static-list \
    op monitor interval=60s timeout=30s start interval=0s timeout=60s stop interval=0s timeout=60s

# Resources
pcs -f "$CIB" resource create vm1_drbd ocf:linbit:drbd --no-default-ops \
    drbd_resource=vm1 \
    op monitor interval=29s timeout=30s role=Promoted monitor interval=31s timeout=30s role=Unpromoted start interval=0s timeout=240s stop interval=0s timeout=100s promote interval=0s timeout=90s demote interval=0s timeout=90s notify interval=0s timeout=90s
pcs -f "$CIB" resource promotable vm1_drbd vm1_drbd_clone promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
pcs -f "$CIB" resource create vm1_fs ocf:heartbeat:Filesystem --no-default-ops \
    device=/dev/drbd0 directory=/var/lib/hakvm/vm1 fstype=xfs options=noatime \
    op monitor interval=20s timeout=40s start interval=0s timeout=120s stop interval=0s timeout=120s
pcs -f "$CIB" resource create vm1 ocf:heartbeat:VirtualDomain --no-default-ops \
    config=/etc/hakvm/domains/vm1.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false \
    meta target-role=Started \
    op monitor interval=10s timeout=30s start interval=0s timeout=120s stop interval=0s timeout=120s
pcs -f "$CIB" resource create vm2_drbd ocf:linbit:drbd --no-default-ops \
    drbd_resource=vm2 \
    op monitor interval=29s timeout=30s role=Promoted monitor interval=31s timeout=30s role=Unpromoted start interval=0s timeout=240s stop interval=0s timeout=100s promote interval=0s timeout=90s demote interval=0s timeout=90s notify interval=0s timeout=90s
pcs -f "$CIB" resource promotable vm2_drbd vm2_drbd_clone promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
pcs -f "$CIB" resource create vm2_fs ocf:heartbeat:Filesystem --no-default-ops \
    device=/dev/drbd1 directory=/var/lib/hakvm/vm2 fstype=xfs options=noatime \
    op monitor interval=20s timeout=40s start interval=0s timeout=120s stop interval=0s timeout=120s
pcs -f "$CIB" resource create vm2 ocf:heartbeat:VirtualDomain --no-default-ops \
    config=/etc/hakvm/domains/vm2.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false \
    meta target-role=Started \
    op monitor interval=10s timeout=30s start interval=0s timeout=120s stop interval=0s timeout=120s
pcs -f "$CIB" resource create vm3_drbd ocf:linbit:drbd --no-default-ops \
    drbd_resource=vm3 \
    op monitor interval=29s timeout=30s role=Promoted monitor interval=31s timeout=30s role=Unpromoted start interval=0s timeout=240s stop interval=0s timeout=100s promote interval=0s timeout=90s demote interval=0s timeout=90s notify interval=0s timeout=90s
pcs -f "$CIB" resource promotable vm3_drbd vm3_drbd_clone promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
pcs -f "$CIB" resource create vm3_fs ocf:heartbeat:Filesystem --no-default-ops \
    device=/dev/drbd2 directory=/var/lib/hakvm/vm3 fstype=xfs options=noatime \
    op monitor interval=20s timeout=40s start interval=0s timeout=120s stop interval=0s timeout=120s
pcs -f "$CIB" resource create vm3 ocf:heartbeat:VirtualDomain --no-default-ops \
    config=/etc/hakvm/domains/vm3.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false \
    meta target-role=Started \
    op monitor interval=10s timeout=30s start interval=0s timeout=120s stop interval=0s timeout=120s
pcs -f "$CIB" resource create vm4_drbd ocf:linbit:drbd --no-default-ops \
    drbd_resource=vm4 \
    op monitor interval=29s timeout=30s role=Promoted monitor interval=31s timeout=30s role=Unpromoted start interval=0s timeout=240s stop interval=0s timeout=100s promote interval=0s timeout=90s demote interval=0s timeout=90s notify interval=0s timeout=90s
pcs -f "$CIB" resource promotable vm4_drbd vm4_drbd_clone promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
pcs -f "$CIB" resource create vm4_fs ocf:heartbeat:Filesystem --no-default-ops \
    device=/dev/drbd3 directory=/var/lib/hakvm/vm4 fstype=xfs options=noatime \
    op monitor interval=20s timeout=40s start interval=0s timeout=120s stop interval=0s timeout=120s
pcs -f "$CIB" resource create vm4 ocf:heartbeat:VirtualDomain --no-default-ops \
    config=/etc/hakvm/domains/vm4.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false \
    meta target-role=Started \
    op monitor interval=10s timeout=30s start interval=0s timeout=120s stop interval=0s timeout=120s

# Constraints
pcs -f "$CIB" constraint location add node01_fence_avoids_node01 node01_fence node01 -- -INFINITY
pcs -f "$CIB" constraint location add node02_fence_avoids_node02 node02_fence node02 -- -INFINITY
pcs -f "$CIB" constraint colocation add vm1_fs with Promoted vm1_drbd_clone INFINITY id=vm1_fs_with_drbd
pcs -f "$CIB" constraint order promote vm1_drbd_clone then start vm1_fs kind=Mandatory id=vm1_fs_after_drbd
pcs -f "$CIB" constraint colocation add vm1 with vm1_fs INFINITY id=vm1_with_fs
pcs -f "$CIB" constraint order start vm1_fs then start vm1 kind=Mandatory id=vm1_after_fs
pcs -f "$CIB" constraint location vm1_fs rule constraint-id=vm1_fs_needs_good_data score=-INFINITY not_defined master-vm1_drbd or master-vm1_drbd lt number 1000 or defined hakvm-resyncing-vm1
pcs -f "$CIB" constraint location add vm1_prefers_node01 vm1 node01 -- 100
pcs -f "$CIB" constraint colocation add vm2_fs with Promoted vm2_drbd_clone INFINITY id=vm2_fs_with_drbd
pcs -f "$CIB" constraint order promote vm2_drbd_clone then start vm2_fs kind=Mandatory id=vm2_fs_after_drbd
pcs -f "$CIB" constraint colocation add vm2 with vm2_fs INFINITY id=vm2_with_fs
pcs -f "$CIB" constraint order start vm2_fs then start vm2 kind=Mandatory id=vm2_after_fs
pcs -f "$CIB" constraint location vm2_fs rule constraint-id=vm2_fs_needs_good_data score=-INFINITY not_defined master-vm2_drbd or master-vm2_drbd lt number 1000 or defined hakvm-resyncing-vm2
pcs -f "$CIB" constraint location add vm2_prefers_node02 vm2 node02 -- 100
pcs -f "$CIB" constraint colocation add vm3_fs with Promoted vm3_drbd_clone INFINITY id=vm3_fs_with_drbd
pcs -f "$CIB" constraint order promote vm3_drbd_clone then start vm3_fs kind=Mandatory id=vm3_fs_after_drbd
pcs -f "$CIB" constraint colocation add vm3 with vm3_fs INFINITY id=vm3_with_fs
pcs -f "$CIB" constraint order start vm3_fs then start vm3 kind=Mandatory id=vm3_after_fs
pcs -f "$CIB" constraint location vm3_fs rule constraint-id=vm3_fs_needs_good_data score=-INFINITY not_defined master-vm3_drbd or master-vm3_drbd lt number 1000 or defined hakvm-resyncing-vm3
pcs -f "$CIB" constraint location add vm3_prefers_node01 vm3 node01 -- 100
pcs -f "$CIB" constraint colocation add vm4_fs with Promoted vm4_drbd_clone INFINITY id=vm4_fs_with_drbd
pcs -f "$CIB" constraint order promote vm4_drbd_clone then start vm4_fs kind=Mandatory id=vm4_fs_after_drbd
pcs -f "$CIB" constraint colocation add vm4 with vm4_fs INFINITY id=vm4_with_fs
pcs -f "$CIB" constraint order start vm4_fs then start vm4 kind=Mandatory id=vm4_after_fs
pcs -f "$CIB" constraint location vm4_fs rule constraint-id=vm4_fs_needs_good_data score=-INFINITY not_defined master-vm4_drbd or master-vm4_drbd lt number 1000 or defined hakvm-resyncing-vm4
pcs -f "$CIB" constraint location add vm4_prefers_node02 vm4 node02 -- 100

# Alerts: hakvm's agent records every cluster event on each node
pcs -f "$CIB" alert create id=hakvm-events path=/usr/local/lib/hakvm/alert-agent meta timeout=120s
pcs -f "$CIB" alert recipient add hakvm-events id=hakvm-events-file value=/var/log/hakvm/events/events.jsonl

if [ "$PUSH" = 1 ]; then pcs cluster cib-push "$CIB" --config; fi
