"""Live, read-only broadcast of a site to observers through Eclipse Zenoh (issue #13).

schema.py: key expressions and versioned payloads; publisher.py: the site side (tap subscriber
thread -> publisher process); observer.py: the subscriber side; router_cli.py / observe_cli.py:
`telesurg broadcast-router` and `telesurg observe`; site_options.py: the sites' `--broadcast` options and
`telesurg demo --observers N`; observer_pool.py: many headless observers in one process.
"""

from telesurg.broadcast.publisher import BroadcastPublisher, attach_broadcast

__all__ = ["BroadcastPublisher", "attach_broadcast"]
