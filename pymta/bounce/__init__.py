"""pymta.bounce: see DESIGN.md."""
