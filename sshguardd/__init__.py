"""sshguardd: keeps a host's SSH hardened by itself."""

__version__ = "0.1.0"
