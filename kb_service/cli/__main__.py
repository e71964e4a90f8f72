import sys

from kb_service.cli.main import main

sys.exit(main())
