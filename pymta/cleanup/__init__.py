"""pymta.cleanup: see DESIGN.md."""
