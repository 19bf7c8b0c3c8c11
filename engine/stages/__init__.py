"""Stage runners: each reads one topic, calls a pure stage function and writes the next topic."""
