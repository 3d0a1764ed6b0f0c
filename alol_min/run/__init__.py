"""The main job around the five concepts: prepare (rewards, V, advantages, the reference pass),
train, evaluate, reproduce, plots and the claims scorecard; `config.py` holds its configuration."""
