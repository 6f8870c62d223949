"""Side-by-side benchmarks (see benchmarks/README.md and docs/performance.md): `python -m benchmarks.run_all [--quick] [--skip-trl]`."""
