import sys

from karyoflow.cli import main

sys.exit(main())
