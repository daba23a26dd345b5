"""Exercise definitions (reference, cases, known-wrong catalog), one module per topic."""
