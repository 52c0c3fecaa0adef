"""The kubebuilder book's CronJob controller (``batch.tutorial.kubebuilder.io``), on
``reconciler``: ``api`` and ``api_v2`` (the types of both versions), ``cron`` (schedules as
the book reads them), ``schedule`` (every decision, pure), ``controller`` (the reconciler:
reads, decides, writes), ``webhooks`` and ``conversion`` (defaulting, validation, v1 ↔ v2)
and ``main`` (the operator)."""
