import sys

from databroker_lite.cli import main

sys.exit(main())
