"""The Trainyard Python SDK: ``from trainyard import Client``. The `trainyard` CLI is a thin layer over it."""

from trainyard.client import Client
from trainyard.config import ClientConfig
from trainyard.errors import (
    InvalidRequest,
    JobCancelled,
    JobFailed,
    NotFound,
    NotSupported,
    RateLimited,
    TrainyardError,
    Unauthorized,
    Unavailable,
)
from trainyard.models import Caller, Event, Job, JobPage, Model, ModelRef, Prediction, Revision
from trainyard.upload import UploadResult

__all__ = [
    "Caller",
    "Client",
    "ClientConfig",
    "Event",
    "InvalidRequest",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobPage",
    "Model",
    "ModelRef",
    "NotFound",
    "NotSupported",
    "Prediction",
    "RateLimited",
    "Revision",
    "TrainyardError",
    "Unauthorized",
    "Unavailable",
    "UploadResult",
]
