"""Widgets of the shipdeck app, one module each."""
