"""The stream simulator backend (placeholder module; the race checker lives in testing)."""
