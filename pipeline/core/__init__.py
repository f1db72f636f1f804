"""core: see pipeline/__init__.py for the map."""
