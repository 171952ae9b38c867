import sys

from tests.demo.run import main

sys.exit(main())
