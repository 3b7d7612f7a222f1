"""The labelling page: people answer the scripted teacher's questions in a browser.

`presa-bench label serve` (bench/commands/label.py) asks the questions `bench.feedback.sample_queries`
draws (the scripted teacher's sampler, same seed and settings) and writes the answers in the labels
schema of docs/feedback.md, so that `presa-bench run --labels FILE` trains on them unchanged.

- `store`: the answers, journalled (append + fsync) and rewritten as the labels CSV atomically;
- `render`: the faithful top-down view of a segment (position read from the observations), cached;
- `app`: the Flask app and the pre-rendering worker.
"""
