"""Bundled, offline datasets with their provenance and license."""
