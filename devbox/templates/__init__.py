"""Package data: supervisord.conf and Devboxfile templates (read with importlib.resources)."""
