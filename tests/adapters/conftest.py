"""The Slack end-to-end stack, for every adapter test module that asks for it."""

from tests.adapters.slack_stack import stack_factory

__all__ = ["stack_factory"]
