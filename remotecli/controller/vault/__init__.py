"""The vault and the credentials it holds: AES-GCM with key ids (``cipher.py``), credential
records (``credentials.py``) and their facts per provider (``facts.py``), leases on a user's
credentials (``leases.py``) and sync-back of rotated files from a VM (``sync.py``)."""
