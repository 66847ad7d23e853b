"""Jobs: read particles, run a schedule of the engine, write outputs."""
