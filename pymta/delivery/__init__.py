"""pymta.delivery: see DESIGN.md."""
