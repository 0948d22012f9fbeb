"""`hakvm serve`'s web face: the HTTP server and its access rules, the page, the timeline's
SVG and the Prometheus exposition, all read-only views of ops/view.py's ClusterView."""
