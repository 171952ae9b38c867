"""`make demo` (run.py) and its bridge to the real Lambda handlers (bridge.py): scaffolding, never
deployed."""
