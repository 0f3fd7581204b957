"""Metrics: pure functions over numbers and strings (numpy, scipy, rouge-score), never a model call.

Benchmarks (``unlearnkit.benchmarks``) run the model once per split — one teacher-forced pass for
every answer variant, one greedy generation pass — and feed the resulting arrays to these functions:

* ``likelihood``: length-normalised probability, probability normalised over answer options,
  per-sample truth ratios and their aggregations (OpenUnlearning's exact definitions);
* ``text``: ROUGE-1/ROUGE-L of generations against gold answers, stop-string cutting;
* ``stats``: forget quality (two-sample KS test) and model utility (harmonic mean);
* ``mia``: membership-inference scores (LOSS, ZLib, Reference, GradNorm, Min-K%, Min-K%++), their AUC
  (holdout = positive class) and privleak;
* ``memorization``: exact memorisation and extraction strength (with OpenUnlearning's 1/N floor).
"""
