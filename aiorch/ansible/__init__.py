"""Everything aiorch asks of Ansible goes through this package."""
