"""Reading a table, profiling its columns and detecting the task."""
