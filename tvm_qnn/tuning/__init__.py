# SPDX-License-Identifier: Apache-2.0
"""Per-device tuning of the bit-serial schedule templates (MetaSchedule + XGBoost), and the
schedules ``compile`` takes from tuning records and pre-tuned folders."""

from .choice import keep_best
from .database import open_database
from .schedules import KernelSchedules
from .tasks import Task, extract_tasks, workload
from .tune import TaskResult, tune, tune_report

__all__ = ["KernelSchedules", "Task", "TaskResult", "extract_tasks", "keep_best",
           "open_database", "tune", "tune_report", "workload"]
