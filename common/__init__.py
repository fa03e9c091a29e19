"""Code both problems need, written once: errors, config/CLI, seeding, devices, atomic I/O, progress."""
