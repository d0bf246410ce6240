"""Early exit: exit predictors (training) and the early-exit benchmark."""
