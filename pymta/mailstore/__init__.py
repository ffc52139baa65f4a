"""pymta.mailstore: see DESIGN.md."""
