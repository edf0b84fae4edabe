"""Using a trained model: one inference wrapper shared by `healthgpt ask/generate` and the app."""
