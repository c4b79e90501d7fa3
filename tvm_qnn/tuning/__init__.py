# SPDX-License-Identifier: Apache-2.0
"""Per-device tuning of the bit-serial schedule templates (MetaSchedule + XGBoost)."""

from .database import keep_best, open_database
from .tasks import Task, extract_tasks, workload
from .tune import TaskResult, tune, tune_report

__all__ = ["Task", "TaskResult", "extract_tasks", "keep_best", "open_database", "tune",
           "tune_report",
           "workload"]
