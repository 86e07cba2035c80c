"""Quality metrics in plain numpy, shared by evaluation and monitoring.

Imports: numpy, shipyard.errors (layer L1).
"""

from __future__ import annotations

from shipyard.metrics.classification import classification_metrics, roc_auc_binary
from shipyard.metrics.regression import regression_metrics

__all__ = ["classification_metrics", "regression_metrics", "roc_auc_binary"]
