"""What can be built: the architecture spec, its budget, receptive field and the seed's baselines."""
from space.spec import ArchSpec, Layer, BudgetError, SpecError, count_params, check_budget, DEFAULT_MAX_PARAMS
from space.model import build_model
from space.rf import receptive_field, format_rf_table

__all__ = ["ArchSpec", "Layer", "BudgetError", "SpecError", "count_params", "check_budget",
           "DEFAULT_MAX_PARAMS", "build_model", "receptive_field", "format_rf_table"]
