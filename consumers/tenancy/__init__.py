"""Tenancy across the router group: group-wide usage and budgets summed from the response
topic (``usage``), and the requests topic's partition count that splits a tenant's rate into
per-partition shares (``shares``)."""

from consumers.tenancy.shares import partition_count
from consumers.tenancy.usage import BudgetVerdict, TenantUsage, UsageTail

__all__ = ["BudgetVerdict", "TenantUsage", "UsageTail", "partition_count"]
