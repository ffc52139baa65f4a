"""pymta.rewrite: see DESIGN.md."""
