"""Persistence: the book, the run log and the change journal (SQLAlchemy 2.0 + Alembic)."""
