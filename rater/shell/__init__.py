"""The streaming shell around the core: partition tasks (task.py) and their Kafka driver (driver.py)."""
