"""Uses of a trained model: compression, features for ML models, generation, anomaly scores."""
