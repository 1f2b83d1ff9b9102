"""`python -m db upgrade`: migrate the database named by KARYO_DATABASE_URL."""

import sys

from db.migrate import upgrade

if __name__ == "__main__":
    if sys.argv[1:] != ["upgrade"]:
        sys.exit("usage: python -m db upgrade")
    upgrade()
