"""pymta.pop3: see DESIGN.md."""
