"""The evaluation harness: correctness stages, anti-cheat checks, the sandboxed worker, timing."""
