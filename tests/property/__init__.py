"""Property-based tests (hypothesis): invariants over generated and damaged input."""
