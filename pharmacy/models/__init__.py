"""Typed SQLAlchemy models, one module per aggregate. Importing this registers every table."""

from .audit import AuditEvent, AuditSeal
from .base import Base
from .catalog import InteractionRule, InteractionSeverity, Medicine, MedicineCodeHistory
from .delivery import (
    AttemptOutcome,
    DeliveryAttempt,
    DeliveryRoute,
    DeliveryStop,
    DeliveryWave,
    OutboxMessage,
    StopStatus,
    WaveStatus,
)
from .orders import (
    AllocationStatus,
    DeliverySlot,
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    PaymentStatus,
    StockAllocation,
    WebhookEvent,
)
from .prescriptions import (
    Prescription,
    PrescriptionItem,
    PrescriptionReview,
    PrescriptionStatus,
    ReviewAction,
)
from .sites import Pharmacy, Vehicle
from .stock import (
    BatchStatus,
    CDEntryKind,
    CDRegister,
    CDRegisterEntry,
    LostDemand,
    MovementKind,
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderStatus,
    ReorderSuggestion,
    StockBatch,
    StockMovement,
    SuggestionStatus,
)
from .users import (
    Address,
    Allergy,
    Courier,
    CurrentMedication,
    GeocodeCache,
    LinkStatus,
    Notification,
    PatientLinkRequest,
    PatientProfile,
    PendingRegistration,
    Prescriber,
    PrescriberProfession,
    RecoveryCode,
    Role,
    User,
)

__all__ = [
    "AuditSeal",
    "OutboxMessage",
    "PurchaseOrder", "PurchaseOrderLine", "PurchaseOrderStatus", "ReorderSuggestion",
    "SuggestionStatus",
    "CDEntryKind", "CDRegister", "CDRegisterEntry",
    "LostDemand",
    "AllocationStatus", "DeliverySlot", "GeocodeCache", "StockAllocation", "WebhookEvent",
    "Address", "Allergy", "AttemptOutcome", "AuditEvent", "Base", "BatchStatus", "Courier",
    "CurrentMedication", "DeliveryAttempt", "DeliveryRoute", "DeliveryStop", "DeliveryWave",
    "InteractionRule", "InteractionSeverity", "Medicine", "MedicineCodeHistory", "MovementKind",
    "Notification", "LinkStatus", "PatientLinkRequest", "PendingRegistration",
    "RecoveryCode",
    "Order", "OrderLine", "OrderStatus", "Payment", "PaymentStatus", "PatientProfile", "Pharmacy",
    "Prescriber", "PrescriberProfession", "Prescription", "PrescriptionItem",
    "PrescriptionReview", "ReviewAction",
    "PrescriptionStatus", "Role", "StockBatch", "StockMovement", "StopStatus", "User", "Vehicle",
    "WaveStatus",
]
