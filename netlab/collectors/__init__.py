"""What is read from a node: one module per source, each a parser (text in, rows out)
and a thin collector that runs the command or reads the file through a target."""
