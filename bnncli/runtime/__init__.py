"""The NumPy reference runtime for packed bnncli artifacts (imports NumPy, never torch)."""
