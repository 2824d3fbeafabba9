import sys

from drmm.cli import main

sys.exit(main())
