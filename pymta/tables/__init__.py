"""pymta.tables: see DESIGN.md."""
