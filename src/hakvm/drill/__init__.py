"""hakvm.drill: failing the cluster on purpose (the drills, the demo's failover) and checking
what must hold."""
