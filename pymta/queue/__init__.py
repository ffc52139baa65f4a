"""pymta.queue: see DESIGN.md."""
