"""The kubebuilder book's CronJob controller (``batch.tutorial.kubebuilder.io/v1``), on
``reconciler``: ``api`` (the types), ``schedule`` (every decision, pure),
``controller`` (the reconciler: reads, decides, writes) and ``main`` (the operator)."""
