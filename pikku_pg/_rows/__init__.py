"""Row mapping and input encoding, one module per component (shared by both flavours)."""
