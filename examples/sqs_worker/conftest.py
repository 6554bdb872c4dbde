"""``bg_sqs`` comes with pytest-bgwork's plugin; imported here until the plugin registers it."""

from pytest_bgwork.adapters._web_fixtures import bg_sqs

__all__ = ["bg_sqs"]
