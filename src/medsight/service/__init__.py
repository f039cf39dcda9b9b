"""The medsight service (`medsight serve`): durable DICOM and DICOMweb intake, a job queue
that analyses each complete study in worker processes, a prioritised worklist with a viewer,
feedback and an audit log, outbound delivery to a PACS and a webhook, and drift monitoring.
Research use only, not for diagnostic use."""

from medsight.service.store import InstanceStore, StoredInstance

__all__ = ["InstanceStore", "StoredInstance"]
