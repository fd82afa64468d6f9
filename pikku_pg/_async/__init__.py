"""The services' I/O code: ``pikku_pg/_async`` is written by hand, ``pikku_pg/_sync`` is
generated from it by ``scripts/unasync.py``."""
