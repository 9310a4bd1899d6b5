"""The playbooks that ship with healer (data: one TOML file each)."""
