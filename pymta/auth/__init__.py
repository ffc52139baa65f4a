"""pymta.auth: see DESIGN.md."""
