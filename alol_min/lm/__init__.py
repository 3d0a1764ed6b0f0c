"""The language model: tokenizer and model presets, batching and per-token log-probs, decoding,
the Accelerate loop helpers, NLL training and the cached reference policy pi_ref."""
