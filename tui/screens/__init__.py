"""Screens and modals of the shipdeck app."""
