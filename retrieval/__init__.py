"""ipbot's retrieval core: corpus model, embeddings, hybrid index and answers; no chat code."""
