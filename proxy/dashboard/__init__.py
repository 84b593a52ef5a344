"""The live dashboard: rolling windows fed by a plugin, a JSON view, a static page."""
