"""SQLAlchemy 2 models (db.models), sessions (db.session) and Alembic migrations (db/migrations).

`python -m db upgrade` (or `alembic -c db/alembic.ini upgrade head`) brings a database to the
current schema; the URL comes from KARYO_DATABASE_URL."""
