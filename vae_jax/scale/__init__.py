"""Many seeds in one vmapped program, sweeps, and one code path for 1..N devices."""
