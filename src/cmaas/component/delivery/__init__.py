"""Sealed messages out through the component, and receipts, markers and bounces back."""

from cmaas.component.delivery.feedback import (
    FEEDBACK_EVENTS,
    Feedback,
    FeedbackHandlers,
    FeedbackKind,
    track_feedback,
)
from cmaas.component.delivery.outbound import (
    prekeys_low_message,
    sealed_message_xml,
    status_message,
)

__all__ = [
    "FEEDBACK_EVENTS",
    "Feedback",
    "FeedbackHandlers",
    "FeedbackKind",
    "prekeys_low_message",
    "sealed_message_xml",
    "status_message",
    "track_feedback",
]
