"""Everything about supervisord inside a box: its config (config.py), the XML-RPC client (client.py,
the only importer of supervisor) and the health waits (health.py)."""
