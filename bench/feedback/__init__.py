"""Heterogeneous feedback on trajectory segments: preference pairs and safety labels.

A segment is (episode, start offset, length H) in a dataset (see bench.data); it never crosses an
episode end. Feedback comes from one of two sources:

- the scripted teacher of PreSa (arXiv 2512.20173; ../shared/reference/presa-method.md, section
  Feedback): a pair is labelled by the summed ground-truth reward of its two segments (1 if the
  second is larger, 0.5 on ties), a segment is safe iff its summed cost is <= kappa * H / T. The
  noise models of real annotators follow B-Pref (Lee et al., NeurIPS 2021 benchmarks track;
  github.com/rll-research/BPref): mistakes (flipped labels), a Bradley-Terry stochastic teacher,
  and an "equal" band, each scaled by the average segment return as B-Pref does;
- a labels file written by people (schema in docs/feedback.md), validated against the dataset.

`FeedbackSet` holds the labels plus ground-truth diagnostics (segment sums, for `summary` only)
and is stored as parquet with its provenance in the file's metadata. Learners get
`FeedbackSet.view()`, a `FeedbackView`: segment indices and labels, no rewards or costs.
Everything is vectorised over index arrays: no per-segment Python objects or loops.

Modules, each importing only those listed before it (data flows one way):

- schema: stored-layout names (label kinds, labels-file columns, parquet metadata keys);
- settings: FeedbackSettings (the teacher's settings; `--set feedback.KEY` by bench.settings' rule);
- teacher: the scripted teacher's label functions (noise-free and B-Pref noisy), the safety budget;
- segments: valid segments, segment sums, distinct pair / segment draws;
- provenance: dataset content hash and description, versions;
- containers: FeedbackView (learner-facing) and FeedbackSet (labels + diagnostics, parquet I/O);
- agreement: annotator agreement and Cohen's kappa;
- synthetic: the seeded scripted teacher (sample_queries, make_feedback);
- labels: labels files written by people (validate_labels, import_labels);
- runs: feedback_for_run, the per-run feedback with its on-disk cache.

This package's names are re-exported here: import them from bench.feedback.
"""

from bench.feedback.schema import (
    DIAGNOSTICS_KEY,
    FORMAT_VERSION,
    LABEL_COLUMNS,
    OPTIONAL_COLUMNS,
    PAIR_SAMPLING,
    PREFERENCE,
    PROVENANCE_KEY,
    SAFETY,
    TRUTH_COLUMNS,
)
from bench.feedback.settings import FeedbackSettings
from bench.feedback.teacher import noisy_preference_labels, preference_labels, reward_margin, safety_budget, safety_labels
from bench.feedback.segments import sample_pairs, sample_segments
from bench.feedback.provenance import dataset_hash
from bench.feedback.containers import SPLIT_BY, FeedbackSet, FeedbackView
from bench.feedback.agreement import annotator_agreement, cohen_kappa
from bench.feedback.synthetic import make_feedback, sample_queries
from bench.feedback.labels import import_labels, validate_labels
from bench.feedback.runs import feedback_for_run

__all__ = [
    "DIAGNOSTICS_KEY",
    "FORMAT_VERSION",
    "LABEL_COLUMNS",
    "OPTIONAL_COLUMNS",
    "PAIR_SAMPLING",
    "PREFERENCE",
    "PROVENANCE_KEY",
    "SAFETY",
    "SPLIT_BY",
    "TRUTH_COLUMNS",
    "FeedbackSet",
    "FeedbackSettings",
    "FeedbackView",
    "annotator_agreement",
    "cohen_kappa",
    "dataset_hash",
    "feedback_for_run",
    "import_labels",
    "make_feedback",
    "noisy_preference_labels",
    "preference_labels",
    "reward_margin",
    "safety_budget",
    "safety_labels",
    "sample_pairs",
    "sample_queries",
    "sample_segments",
    "validate_labels",
]
