"""Request rates, concurrent streams and token quotas of every caller.

- ``policy.py``: tiers of limits and each tenant's tier (``LIMITS_FILE``);
- ``gcra.py``: the rate algorithm, on integer microseconds;
- ``store.py``: where counters live (the interface); ``redis_store.py`` shared by replicas,
  ``memory_store.py`` for a gateway alone;
- ``limiter.py``: the decisions, a turn's lease, what a caller has left;
- ``http.py``: the route dependency, a turn's admission, the ``RateLimit-*`` headers.
"""
