"""Pick the simulated broker before the app module (and its tasks) is imported."""

import os

os.environ["ENRICH_BROKER_URL"] = "bgwork://"
