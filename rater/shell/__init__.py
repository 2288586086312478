"""The streaming shell: the Faust app, its topics, tables and agents around the core."""
