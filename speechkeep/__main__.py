import sys

from speechkeep.cli import main

sys.exit(main())
