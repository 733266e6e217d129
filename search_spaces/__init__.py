"""Shipped search spaces (YAML), installed as the package autodl.search_spaces."""
