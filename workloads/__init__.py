"""Energy-instrumented adversarial training: data, models, attacks, methods, telemetry, trials."""
