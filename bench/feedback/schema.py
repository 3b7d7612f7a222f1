"""Names of the stored layout of feedback: label kinds, labels-file columns, parquet metadata keys."""

#: Version of the stored layout (columns + metadata); part of the cache key.
FORMAT_VERSION = 1
#: Parquet schema-metadata keys: provenance (shown to learners) and ground-truth diagnostics (not).
PROVENANCE_KEY = b"presa_feedback"
DIAGNOSTICS_KEY = b"presa_feedback_diagnostics"
PREFERENCE = "preference"
SAFETY = "safety"
PAIR_SAMPLING = ("uniform", "disjoint-episodes")
#: Columns of a labels file (docs/feedback.md). Safety rows leave episode_1/start_1 empty.
LABEL_COLUMNS = ("kind", "episode_0", "start_0", "episode_1", "start_1", "length", "label")
OPTIONAL_COLUMNS = ("annotator", "dataset_hash")
#: Ground-truth columns written next to the labels by `FeedbackSet.save` (diagnostics only).
TRUTH_COLUMNS = ("gt_reward_0", "gt_reward_1", "gt_cost")
