"""Notifiers used by the engine tests."""

from __future__ import annotations

from typing import Any

from chimeway import Notifier, Recipient, Workflow


def in_app(headline: str = "Hello") -> dict[str, Any]:
    return {"headline": headline, "body": "Body", "primary_action": {"label": "Open", "url": "/x"}}


EMAIL = {"subject": "Hi", "html_body": "<p>Hi</p>", "text_body": "Hi"}


class Welcome(Notifier):
    """Plain deliveries on the channels given in params (default in_app)."""

    key = "welcome"
    version = 1
    category = "account"

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return [{"id": uid} for uid in params["users"]]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"name": recipient.id}

    def channels(self, params: dict[str, Any], recipient: Recipient) -> list[str]:
        return list(params.get("channels", ["in_app"]))

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return EMAIL if channel == "email" else in_app(f"Welcome {recipient.id}")


class WithWorkflow(Welcome):
    """Runs the workflow given to its constructor for every recipient."""

    key = "with_workflow"

    def __init__(self, workflow: Workflow) -> None:
        self._workflow = workflow

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return self._workflow

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        if channel == "email":
            return EMAIL
        if channel == "sms":
            return {"text_body": "Hi"}
        if channel == "push":
            return {"title": "Hi", "body": "Hi"}
        return in_app()
