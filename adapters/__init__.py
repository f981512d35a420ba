"""Platform edges (console, Slack, Discord) and the command line on top of them."""

__all__: list[str] = []
