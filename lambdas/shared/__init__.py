"""Code shared by several Lambda functions and by the stacks (topic names, schemas)."""
