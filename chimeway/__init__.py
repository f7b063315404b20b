"""Chimeway: a Postgres-native notification workflow engine with no broker."""

from chimeway.adapters import (
    Adapter,
    Bounced,
    DeliveryRequest,
    LoggerAdapter,
    Permanent,
    Sent,
    Temporary,
)
from chimeway.app import Chimeway
from chimeway.content import ContentSchemas
from chimeway.dispatch import RetryPolicy
from chimeway.dsl import OnOutcome, OnSignal, Step, Stop, WaitUntil, Workflow
from chimeway.errors import (
    ChimewayError,
    ConfigurationError,
    DatabaseUnavailable,
    InvalidArgument,
    InvalidContent,
    InvalidNotifier,
    InvalidSignal,
    InvalidTransition,
    InvalidTrigger,
    InvalidWorkflow,
    MigrationError,
    NotFound,
    SchemaNotReady,
    WorkflowVersionConflict,
)
from chimeway.maintenance import Maintenance
from chimeway.notifiers import Notifier, Recipient
from chimeway.progression import Advanced, Completed, Noop, Stopped, Waiting
from chimeway.trigger import Duplicate, Triggered
from chimeway.types import DeliveryStatus, Outcome, RunState

__all__ = [
    "Adapter",
    "Advanced",
    "Bounced",
    "Chimeway",
    "ChimewayError",
    "Completed",
    "ConfigurationError",
    "ContentSchemas",
    "DatabaseUnavailable",
    "DeliveryRequest",
    "DeliveryStatus",
    "Duplicate",
    "InvalidArgument",
    "InvalidContent",
    "InvalidNotifier",
    "InvalidSignal",
    "InvalidTransition",
    "InvalidTrigger",
    "InvalidWorkflow",
    "LoggerAdapter",
    "Maintenance",
    "MigrationError",
    "Noop",
    "NotFound",
    "Notifier",
    "OnOutcome",
    "OnSignal",
    "Outcome",
    "Permanent",
    "Recipient",
    "RetryPolicy",
    "RunState",
    "SchemaNotReady",
    "Sent",
    "Step",
    "Stop",
    "Stopped",
    "Temporary",
    "Triggered",
    "WaitUntil",
    "Waiting",
    "Workflow",
    "WorkflowVersionConflict",
]
