"""Seed-sweep bandit: prompts × seeds, Thompson sampling over like/dislike ratings, a durable SQLite store.

Entry point for the host (tab, HTTP routes): `service.BanditService`. Pure Python/numpy + sqlite3.
"""
