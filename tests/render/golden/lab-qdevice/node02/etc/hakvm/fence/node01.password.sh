#!/bin/sh
# Managed by hakvm: changes are overwritten.
# fence_ipmilan's password_script for node01's BMC: the password stays in a 0600 file
# (copied by apply), never in the CIB; fence_ipmilan passes it on to ipmitool -P.
exec cat /etc/hakvm/fence/node01.password
