"""Slack: teams in Slack threads, through slack_bolt (Socket Mode or HTTP events)."""

from ._format import split_text, to_mrkdwn
from ._outbound import SlackPoster
from .app import EVENTS_PATH, SlackAdapter, SlackConfig

__all__ = ["EVENTS_PATH", "SlackAdapter", "SlackConfig", "SlackPoster", "split_text", "to_mrkdwn"]
