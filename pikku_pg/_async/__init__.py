"""Hand-written async services; ``pikku_pg/_sync`` is generated from this package."""
