"""pymta.qmgr: see DESIGN.md."""
