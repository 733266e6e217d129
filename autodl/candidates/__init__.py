"""Model candidates: scikit-learn baselines and Keras networks, all behind the estimator contract."""
