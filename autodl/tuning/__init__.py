"""Cross-validation of candidates and the Optuna search over Keras models."""
