"""Entry points: made-train, made-eval, made-sample, made-report, made-compare, made-bench."""
