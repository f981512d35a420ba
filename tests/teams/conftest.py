"""Engine tests: every ScriptedModel a test makes is checked when the test ends."""

from .scripted_check import scripted_models_are_used_up

__all__ = ["scripted_models_are_used_up"]
