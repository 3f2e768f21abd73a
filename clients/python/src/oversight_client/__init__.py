"""Oversight agent SDK: ask permission before risky operations.

    from oversight_client import Client

    client = Client()  # OVERSIGHT_URL, OVERSIGHT_API_KEY
    with client.checkpoint("file_write", summary="Overwrite config.yaml"):
        write_config()
"""

from .auto_metrics import fill_metrics, memory_pressure
from .checkpoint import Checkpoint, require_approval
from .client import AsyncClient, Client, __version__, default_client, set_default_client
from .cycles import (
    ContextRegistry,
    CycleReport,
    LeakDetected,
    LeakReport,
    find_cycles,
    last_cycle_report,
    leak_check,
)
from .delegation import Delegation, current_depth, delegation
from .errors import (
    AlreadyDecided,
    Cancelled,
    DelegationLimitExceeded,
    Forbidden,
    IdempotencyConflict,
    NotFound,
    OversightError,
    PayloadChanged,
    PayloadTooLarge,
    RateLimited,
    Rejected,
    TimedOut,
    Unauthenticated,
    Unavailable,
    ValidationError,
)
from .models import Decision, OversightRequest, Trigger
from .receipts import ReceiptInvalid, verify_receipt
from .reporter import MemoryReporter, Sample
from .signature import verify_signature

__all__ = [
    "AlreadyDecided",
    "AsyncClient",
    "Cancelled",
    "Checkpoint",
    "Client",
    "ContextRegistry",
    "CycleReport",
    "Decision",
    "Delegation",
    "DelegationLimitExceeded",
    "Forbidden",
    "IdempotencyConflict",
    "LeakDetected",
    "LeakReport",
    "MemoryReporter",
    "NotFound",
    "OversightError",
    "OversightRequest",
    "PayloadChanged",
    "PayloadTooLarge",
    "RateLimited",
    "ReceiptInvalid",
    "Rejected",
    "Sample",
    "TimedOut",
    "Trigger",
    "Unauthenticated",
    "Unavailable",
    "ValidationError",
    "__version__",
    "current_depth",
    "default_client",
    "delegation",
    "fill_metrics",
    "find_cycles",
    "last_cycle_report",
    "leak_check",
    "memory_pressure",
    "require_approval",
    "set_default_client",
    "verify_receipt",
    "verify_signature",
]
