#!/bin/bash
# Managed by hakvm: the cluster 'seed' configuration as crmsh (4.x)
# commands (the same as hakvm's cib.xml). Usage: $0 [CIB_FILE]: with a file, edit it
# offline; without, change the live cluster. Creates no node entries, authenticates
# no host and holds no password (fence devices use password_script).
set -euo pipefail

WAIT=(-w)  # live: wait for the cluster to finish the transition
if [ $# -ge 1 ]; then export CIB_file="$1"; WAIT=(); fi
# One transaction: nothing reaches the cluster before 'commit'.
crm "${WAIT[@]}" configure <<'EOF'
property cib-bootstrap-options: stonith-enabled=true stonith-timeout=60s stonith-action=reboot no-quorum-policy=stop cluster-recheck-interval=5min
rsc_defaults rsc-options: resource-stickiness=200 migration-threshold=3
op_defaults op-options: timeout=60s
primitive node01_fence stonith:fence_ipmilan \
    params ip=10.0.30.11 ipport=623 username=fence lanplus=1 password_script=/etc/hakvm/fence/node01.password.sh pcmk_host_list=node01 pcmk_host_check=static-list pcmk_delay_base=node01:10s \
    op monitor interval=60s timeout=30s \
    op start interval=0s timeout=60s \
    op stop interval=0s timeout=60s
primitive node02_fence stonith:fence_ipmilan \
    params ip=10.0.30.12 ipport=623 username=fence lanplus=1 password_script=/etc/hakvm/fence/node02.password.sh pcmk_host_list=node02 pcmk_host_check=static-list \
    op monitor interval=60s timeout=30s \
    op start interval=0s timeout=60s \
    op stop interval=0s timeout=60s
primitive vm1_drbd ocf:linbit:drbd \
    params drbd_resource=vm1 \
    op monitor interval=29s timeout=30s role=Promoted \
    op monitor interval=31s timeout=30s role=Unpromoted \
    op start interval=0s timeout=240s \
    op stop interval=0s timeout=100s \
    op promote interval=0s timeout=90s \
    op demote interval=0s timeout=90s \
    op notify interval=0s timeout=90s
clone vm1_drbd_clone vm1_drbd \
    meta promotable=true promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
primitive vm1_fs ocf:heartbeat:Filesystem \
    params device=/dev/drbd0 directory=/var/lib/hakvm/vm1 fstype=xfs options=noatime \
    op monitor interval=20s timeout=40s \
    op start interval=0s timeout=120s \
    op stop interval=0s timeout=120s
primitive vm1 ocf:heartbeat:VirtualDomain \
    params config=/etc/hakvm/domains/vm1.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false \
    meta target-role=Started \
    op monitor interval=10s timeout=30s \
    op start interval=0s timeout=120s \
    op stop interval=0s timeout=120s
primitive vm2_drbd ocf:linbit:drbd \
    params drbd_resource=vm2 \
    op monitor interval=29s timeout=30s role=Promoted \
    op monitor interval=31s timeout=30s role=Unpromoted \
    op start interval=0s timeout=240s \
    op stop interval=0s timeout=100s \
    op promote interval=0s timeout=90s \
    op demote interval=0s timeout=90s \
    op notify interval=0s timeout=90s
clone vm2_drbd_clone vm2_drbd \
    meta promotable=true promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
primitive vm2_fs ocf:heartbeat:Filesystem \
    params device=/dev/drbd1 directory=/var/lib/hakvm/vm2 fstype=xfs options=noatime \
    op monitor interval=20s timeout=40s \
    op start interval=0s timeout=120s \
    op stop interval=0s timeout=120s
primitive vm2 ocf:heartbeat:VirtualDomain \
    params config=/etc/hakvm/domains/vm2.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false \
    meta target-role=Started \
    op monitor interval=10s timeout=30s \
    op start interval=0s timeout=120s \
    op stop interval=0s timeout=120s
primitive vm3_drbd ocf:linbit:drbd \
    params drbd_resource=vm3 \
    op monitor interval=29s timeout=30s role=Promoted \
    op monitor interval=31s timeout=30s role=Unpromoted \
    op start interval=0s timeout=240s \
    op stop interval=0s timeout=100s \
    op promote interval=0s timeout=90s \
    op demote interval=0s timeout=90s \
    op notify interval=0s timeout=90s
clone vm3_drbd_clone vm3_drbd \
    meta promotable=true promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
primitive vm3_fs ocf:heartbeat:Filesystem \
    params device=/dev/drbd2 directory=/var/lib/hakvm/vm3 fstype=xfs options=noatime \
    op monitor interval=20s timeout=40s \
    op start interval=0s timeout=120s \
    op stop interval=0s timeout=120s
primitive vm3 ocf:heartbeat:VirtualDomain \
    params config=/etc/hakvm/domains/vm3.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false \
    meta target-role=Started \
    op monitor interval=10s timeout=30s \
    op start interval=0s timeout=120s \
    op stop interval=0s timeout=120s
primitive vm4_drbd ocf:linbit:drbd \
    params drbd_resource=vm4 \
    op monitor interval=29s timeout=30s role=Promoted \
    op monitor interval=31s timeout=30s role=Unpromoted \
    op start interval=0s timeout=240s \
    op stop interval=0s timeout=100s \
    op promote interval=0s timeout=90s \
    op demote interval=0s timeout=90s \
    op notify interval=0s timeout=90s
clone vm4_drbd_clone vm4_drbd \
    meta promotable=true promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
primitive vm4_fs ocf:heartbeat:Filesystem \
    params device=/dev/drbd3 directory=/var/lib/hakvm/vm4 fstype=xfs options=noatime \
    op monitor interval=20s timeout=40s \
    op start interval=0s timeout=120s \
    op stop interval=0s timeout=120s
primitive vm4 ocf:heartbeat:VirtualDomain \
    params config=/etc/hakvm/domains/vm4.xml hypervisor=qemu:///system migration_transport=ssh migration_network_suffix=-migration autoset_utilization_cpu=false autoset_utilization_hv_memory=false autoset_utilization_host_memory=false \
    meta target-role=Started \
    op monitor interval=10s timeout=30s \
    op start interval=0s timeout=120s \
    op stop interval=0s timeout=120s
location node01_fence_avoids_node01 node01_fence -inf: node01
location node02_fence_avoids_node02 node02_fence -inf: node02
colocation vm1_fs_with_drbd inf: vm1_fs vm1_drbd_clone:Promoted
order vm1_fs_after_drbd Mandatory: vm1_drbd_clone:promote vm1_fs:start
colocation vm1_with_fs inf: vm1 vm1_fs
order vm1_after_fs Mandatory: vm1_fs:start vm1:start
location vm1_fs_needs_good_data vm1_fs rule -inf: not_defined master-vm1_drbd or master-vm1_drbd number:lt 1000 or defined hakvm-resyncing-vm1
location vm1_prefers_node01 vm1 100: node01
colocation vm2_fs_with_drbd inf: vm2_fs vm2_drbd_clone:Promoted
order vm2_fs_after_drbd Mandatory: vm2_drbd_clone:promote vm2_fs:start
colocation vm2_with_fs inf: vm2 vm2_fs
order vm2_after_fs Mandatory: vm2_fs:start vm2:start
location vm2_fs_needs_good_data vm2_fs rule -inf: not_defined master-vm2_drbd or master-vm2_drbd number:lt 1000 or defined hakvm-resyncing-vm2
location vm2_prefers_node02 vm2 100: node02
colocation vm3_fs_with_drbd inf: vm3_fs vm3_drbd_clone:Promoted
order vm3_fs_after_drbd Mandatory: vm3_drbd_clone:promote vm3_fs:start
colocation vm3_with_fs inf: vm3 vm3_fs
order vm3_after_fs Mandatory: vm3_fs:start vm3:start
location vm3_fs_needs_good_data vm3_fs rule -inf: not_defined master-vm3_drbd or master-vm3_drbd number:lt 1000 or defined hakvm-resyncing-vm3
location vm3_prefers_node01 vm3 100: node01
colocation vm4_fs_with_drbd inf: vm4_fs vm4_drbd_clone:Promoted
order vm4_fs_after_drbd Mandatory: vm4_drbd_clone:promote vm4_fs:start
colocation vm4_with_fs inf: vm4 vm4_fs
order vm4_after_fs Mandatory: vm4_fs:start vm4:start
location vm4_fs_needs_good_data vm4_fs rule -inf: not_defined master-vm4_drbd or master-vm4_drbd number:lt 1000 or defined hakvm-resyncing-vm4
location vm4_prefers_node02 vm4 100: node02
alert hakvm-events /usr/local/lib/hakvm/alert-agent meta timeout=120s to /var/log/hakvm/events/events.jsonl
commit
EOF
