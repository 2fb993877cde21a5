"""Toy world: procedural scenes with known truth, a tiny text-to-image model, and its standalone host."""
