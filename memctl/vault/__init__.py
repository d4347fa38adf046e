"""The vault: header and keyslots, unlocking, records, and the :class:`Vault` object."""
