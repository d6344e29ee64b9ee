"""``python -m pipelines.manifests``: build every overlay, validate and lint it."""

import sys

from pipelines.manifests.check import main

sys.exit(main())
