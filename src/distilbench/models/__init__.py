"""Models: names and aliases, heads, students cut from teachers, weights shipped in packages."""
