"""Patient-aware contrastive objectives on (N, views, dim) embeddings.

Depends only on torch and lightly; it never imports ``ssl_ecg``.
"""

from losses.patient_ntxent import PatientNTXentLoss

__all__ = ["PatientNTXentLoss"]
