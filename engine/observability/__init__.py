"""What an operator sees of a process: structured logs and W3C trace context."""
