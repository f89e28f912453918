"""Online half of servewatch: schema-checked, micro-batched predictions, all of them logged."""
