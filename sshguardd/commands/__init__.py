"""One module per CLI verb; see sshguardd.cli."""
