"""What each ``scratchnet`` command does; ``scratchnet.cli`` only parses and validates options."""
