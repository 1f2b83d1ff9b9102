"""SQLAlchemy 2 models, sessions and Alembic migrations arrive with the service issue (#5).

This package will import the core package (`karyoflow`) and never the reverse."""
