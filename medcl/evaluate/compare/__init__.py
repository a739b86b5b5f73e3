"""Compare pretraining methods on one cohort: same encoder, budget and seeds; held-out probes.

``medcl compare`` (and ``medcl demo``, which is this engine on the embedded synthetic cohort)
pretrains one encoder per *arm* and seed from one base config, changing only the method and its
prior (attributes, or the label of a supervised / SupCon arm). Each encoder is then probed (linear
model, patient-level cross-validation, :func:`medcl.evaluate.probe.probe_features`) on the subjects
*outside* its pretraining split only, for every requested label. ``random_init`` is the untrained
encoder of the same architecture and seed.

Statistics: for each arm, label and seed the probe's mean over folds; the paired difference to
the baseline arm per seed (same seed = same pretraining order of batches and the same probe
folds), summarised by its mean and a 95% t-interval over seeds (df = seeds - 1). A second interval
uses every (seed, fold) difference with the corrected resampled t-test of Nadeau & Bengio (2003)
in its repeated k-fold form (Bouckaert & Frank 2004): variance factor 1/J + n_test/n_train, since
folds share their training data and a plain t over folds would be far too narrow. The table shows
the seed interval; with a single seed it falls back to the fold interval and says so.

Marks: ``†`` when the arm's prior *is* the probed label (an attribute of that name, or the label of
a supervised / SupCon arm) or a close proxy of it: |Pearson r| >= :data:`PROXY_CORRELATION` (scalar
attribute) or CKA >= :data:`PROXY_CKA` (the attribute's prior kernel against the label's kernel,
:mod:`medcl.evaluate.attributes`), both computed on the training split only. ``!`` when a run's
``summary.json`` flags training collapse (``health.collapsed``) in any seed.

Reuse: each arm x seed folder holds ``fingerprint.json``, the SHA-256 of the fully resolved
config (fitted kernel included), the cohort's content (manifest, table, image sizes, the feature
files of the attributes the run uses) and the medcl version. A finished run is reused only when its fingerprint matches;
otherwise it is deleted and trained again, so runs with other settings are never mixed in.

Modules: :mod:`~medcl.evaluate.compare.arms` (arms, settings), :mod:`~medcl.evaluate.compare.fingerprints`
(reuse), :mod:`~medcl.evaluate.compare.marks` (proxy and collapse marks),
:mod:`~medcl.evaluate.compare.statistics` (intervals), :mod:`~medcl.evaluate.compare.results` (the
table), :mod:`~medcl.evaluate.compare.engine` (:func:`run_comparison`). The page ``report.html`` is
rendered by :func:`medcl.report.comparison.render_comparison`.

Python use::

    from medcl.evaluate.compare import CompareSettings, parse_arms, run_comparison
    from medcl.pretrain.config import load_config

    base = load_config("pipelines/synthetic_2d.yaml", ["epochs=10"])
    result = run_comparison(base, parse_arms("du,kernel_du:age,random_init"), "cmp",
                            CompareSettings(labels=["diagnosis"], seeds=3))
    print(result.table())
    render_comparison(result)  # from medcl.report.comparison: report.html
"""

from medcl.evaluate.compare.arms import (
    RANDOM_INIT,
    Arm,
    CompareSettings,
    known_methods,
    methods_help,
    parse_arm,
    parse_arms,
    reads_attributes,
    reads_label,
)
from medcl.evaluate.compare.engine import arm_config, plan, run_comparison
from medcl.evaluate.compare.fingerprints import (
    FINGERPRINT_FILE,
    FINGERPRINT_VERSION,
    cohort_digest,
    run_fingerprint,
    stored_fingerprint,
)
from medcl.evaluate.compare.marks import PROXY_CKA, PROXY_CORRELATION, proxy_mark, run_health
from medcl.evaluate.compare.results import Comparison
from medcl.evaluate.compare.statistics import corrected_fold_interval, lower_is_better, t_interval

__all__ = [
    "FINGERPRINT_FILE", "FINGERPRINT_VERSION", "PROXY_CKA", "PROXY_CORRELATION", "RANDOM_INIT",
    "Arm", "CompareSettings", "Comparison", "arm_config", "cohort_digest", "corrected_fold_interval",
    "known_methods", "lower_is_better", "methods_help", "parse_arm", "parse_arms", "plan", "proxy_mark",
    "reads_attributes", "reads_label", "run_comparison", "run_fingerprint", "run_health", "stored_fingerprint",
    "t_interval",
]
