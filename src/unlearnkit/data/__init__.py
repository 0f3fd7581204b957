"""Data: prompt formats with answer-only labels, padded batches, forget/retain pairing, loaders."""
