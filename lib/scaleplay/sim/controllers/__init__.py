"""Controllers beside the request path, each attached to what it controls through a hook or a
reference, never by index: ``autoscaler`` (a pool's replicas), ``cascade`` (a small pool's exit),
``timebox`` (a large pool's admission) and ``modes`` (the gateway's and the large pools' knobs)."""
