"""One module per CLI command; each command is a few lines that call the library."""
