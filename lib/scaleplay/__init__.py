"""scaleplay: the simulation library behind the Scaling AI Playbooks.

Modules, in the order data flows through them (see ``lib/README.md``):

- ``queueing``: analytic formulas (Little's law, Erlang B/C, M/M/c waits, bulk service).
- ``capacity``: the back-of-the-envelope chain from users to replicas and dollars.
- ``rng``: named, independent random streams from one seed.
- ``schema``: the documented columns of every table the library returns.
"""

from .rng import seed_sequence, stream

__version__ = "0.1.0"

__all__ = ["seed_sequence", "stream", "__version__"]
