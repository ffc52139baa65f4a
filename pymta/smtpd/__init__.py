"""pymta.smtpd: see DESIGN.md."""
