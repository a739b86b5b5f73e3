"""Evaluate a pretrained encoder: features, probes, fine-tuning, attribute diagnostics, comparisons.

- :mod:`~medcl.evaluate.features`: ``encode_cohort`` / ``encode_dataset`` (no augmentation).
- :mod:`~medcl.evaluate.probe`: ``probe_features``, patient-level cross-validated probes on arrays;
  :mod:`~medcl.evaluate.probe_run`: ``probe_run`` on a run directory (``medcl probe``);
  :mod:`~medcl.evaluate.metrics`: metric functions, ``MetricSummary``, ``ProbeResult``.
- :mod:`~medcl.evaluate.finetune`: ``finetune_run`` (``medcl finetune``: a saved diagnosis model), with
  :mod:`~medcl.evaluate.finetune_loop`, :mod:`~medcl.evaluate.label_subsets`, :mod:`~medcl.evaluate.diagnosis_metrics`;
  :mod:`~medcl.evaluate.predict` (``medcl predict``).
- :mod:`~medcl.evaluate.attributes`: CKA of attributes against labels (``medcl attributes``).
- :mod:`~medcl.evaluate.compare`: the methods comparison engine (``medcl compare``, ``medcl demo``).
- :mod:`~medcl.evaluate.artefacts`: files evaluation adds to a run directory for the report.

Nothing is imported here, so importing one module does not load the others.
"""
