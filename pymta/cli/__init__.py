"""pymta.cli: see DESIGN.md."""
