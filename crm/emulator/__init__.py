"""A local HubSpot: an in-memory account behind HubSpot's HTTP API, for tests and demos."""

from crm.emulator.admin import EmulatorAdmin
from crm.emulator.faults import FaultSettings
from crm.emulator.limits import PLANS, Plan
from crm.emulator.server import EmulatorServer
from crm.emulator.state import ALL_SCOPES, ApiRequest, ApiResponse, EmulatorConfig, HubSpotState

__all__ = [
    "ALL_SCOPES",
    "PLANS",
    "ApiRequest",
    "ApiResponse",
    "EmulatorAdmin",
    "EmulatorConfig",
    "EmulatorServer",
    "FaultSettings",
    "HubSpotState",
    "Plan",
]
